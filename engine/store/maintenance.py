"""Keeping a run's files consistent between writers: what a crashed writer or compaction left behind, and the
error units a resume is asked to compute again. Call these only while holding the run's lock."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from aosa.engine.store.generations import GENERATIONS, settle
from aosa.engine.store.paths import LOOSE_GLOB, TEMP_GLOB, partition, write_atomic
from aosa.engine.store.results import ResultStore
from aosa.schemas.tables import TABLES


def loose_files(store: ResultStore, name: str, run: str) -> list[Path]:
    """The loose (flushed, not yet compacted) files of one table of one run partition."""
    return sorted((store.root / name / run).rglob(LOOSE_GLOB))


def discard_unfinished(store: ResultStore, run_id: str) -> int:
    """Before resuming or compacting `run_id` (no writer running): finish a crashed compaction, delete temp
    files and the timings and maps of flush groups whose metrics never landed; returns how many files went."""
    run = partition("run_id", run_id)
    gone = settle(store.root, run)
    finished = {path.name for path in loose_files(store, "metrics", run)}
    doomed = [path for name in TABLES for path in (store.root / name / run).rglob(TEMP_GLOB)]
    doomed += (store.root / GENERATIONS).glob(f".{run}.json.*.tmp")
    doomed += [path for name in ("timings", "maps") for path in loose_files(store, name, run)
               if path.name not in finished]
    for path in doomed:
        path.unlink(missing_ok=True)
    return gone + len(doomed)


def forget_errors(store: ResultStore, run_id: str) -> int:
    """Delete the units of `run_id` stored as errors (their metrics rows; error units have no timings or maps),
    so a resume computes them again (`--retry-errors`); returns how many units went."""
    forgotten = 0
    for path in store.files("metrics", run_id):
        errors = pc.equal(pq.ParquetFile(path).read(columns=["status"]).column("status"), "error")
        count = pc.sum(errors).as_py() or 0
        if count:
            forgotten += count
            kept = pq.ParquetFile(path).read().filter(pc.invert(errors))
            if kept.num_rows or not path.match(LOOSE_GLOB):  # a compacted file stays named by its generation
                write_atomic(path, lambda file, table=kept: pq.write_table(table, file))
            else:
                path.unlink()
    return forgotten
