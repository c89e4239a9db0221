"""Keeping a run's files consistent between writers: what a crashed writer or compaction left behind, and the
error units a resume is asked to compute again. Each takes the run's `RunWriter`, so it runs under its lock."""

from __future__ import annotations

import pyarrow.compute as pc
import pyarrow.parquet as pq

from aosa.engine.store.generations import GENERATIONS, settle, visible_files
from aosa.engine.store.paths import LOOSE_GLOB, TEMP_GLOB, write_atomic
from aosa.engine.store.previews import PREVIEWS
from aosa.engine.store.writer import RunWriter
from aosa.schemas.tables import TABLES


def discard_unfinished(writer: RunWriter) -> int:
    """Before resuming or compacting the run: finish a crashed compaction, delete temp files and the timings
    and maps of flush groups whose metrics never landed; returns how many files went."""
    folders = {name: writer.folder(name) for name in (*TABLES, PREVIEWS)}  # refused without the run's lock
    gone = settle(writer.root, writer.partition)
    finished = {path.name for path in folders["metrics"].rglob(LOOSE_GLOB)}
    doomed = [path for folder in folders.values() for path in folder.rglob(TEMP_GLOB)]
    doomed += (writer.root / GENERATIONS).glob(f".{writer.partition}.json.*.tmp")
    doomed += [path for name in ("timings", "maps") for path in folders[name].rglob(LOOSE_GLOB)
               if path.name not in finished]
    for path in doomed:
        path.unlink(missing_ok=True)
    return gone + len(doomed)


def forget_errors(writer: RunWriter) -> int:
    """Delete the run's units stored as errors (their metrics rows; error units have no timings or maps), so
    a resume computes them again (`--retry-errors`); returns how many units went."""
    forgotten = 0
    writer.folder("metrics")  # refused without the run's lock
    for path in visible_files(writer.root, "metrics", writer.partition):
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
