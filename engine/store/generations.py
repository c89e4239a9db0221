"""Which Parquet files of a run readers see: its loose files, or what its last compaction committed.

A run's files are the loose `part-*.parquet` files its writers flushed, plus, once compacted, the merged
`gen-*.parquet` files that its generation record `generations/run_id=<id>.json` lists: the files the last
compaction wrote and the full merged files of older generations it kept. The record also lists every file
that compaction replaced: those stay invisible for as long as a crash leaves them on disk, and a merged
file the record does not list is never read (a compaction that died before its commit). One atomic rename
of the record therefore switches a run from its old set of files to its new one (engine.store.compaction).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from aosa.engine.errors import StoreError
from aosa.engine.store.paths import COMPACTED_GLOB, LOOSE_GLOB, write_atomic
from aosa.schemas.tables import TABLES

GENERATIONS = "generations"  # folder of the store holding one generation record per compacted run
RETRIES = 5


@dataclass(frozen=True)
class Generation:
    """A committed compaction of one run: its id, its merged files and the files they replaced, per table
    (paths relative to the store root)."""

    generation: str
    files: dict[str, list[str]]
    replaced: dict[str, list[str]] = field(default_factory=dict)

    def merged(self, root: Path, table: str) -> list[Path]:
        return [root / path for path in self.files.get(table, ())]

    def superseded(self, root: Path, table: str) -> set[Path]:
        return {root / path for path in self.replaced.get(table, ())}


def record_path(root: Path, run_partition: str) -> Path:
    """Where the generation record of one run partition (`run_id=<quoted id>`) lives."""
    return root / GENERATIONS / f"{run_partition}.json"


def read_generation(root: Path, run_partition: str) -> Generation | None:
    """The run's committed generation, None while it was never compacted."""
    path = record_path(root, run_partition)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Generation(data["generation"], data["files"], data.get("replaced", {}))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{path}: unreadable generation record ({exc})") from None


def write_generation(root: Path, run_partition: str, generation: Generation) -> None:
    """Commit `generation` for the run: the one atomic rename that switches readers to its files."""
    text = json.dumps({"generation": generation.generation, "files": generation.files,
                       "replaced": generation.replaced}, sort_keys=True)
    write_atomic(record_path(root, run_partition), lambda file: file.write(text.encode()))


def current_generations(root: Path, run_partition: str | None = None) -> dict[str, Generation]:
    """Run partition -> committed generation, of one run or of every compacted run."""
    if run_partition is not None:
        found = read_generation(root, run_partition)
        return {run_partition: found} if found else {}
    folder = root / GENERATIONS
    names = sorted(path.stem for path in folder.glob("run_id=*.json")) if folder.is_dir() else []
    return {name: found for name in names if (found := read_generation(root, name))}


def visible_files(root: Path, table: str, run_partition: str | None = None) -> list[Path]:
    """The Parquet files of `table` (of one run partition, or of every run) a reader sees: loose files no
    generation replaced, plus each run's merged files. Listed again if a compaction committed meanwhile."""
    for _ in range(RETRIES):
        before = current_generations(root, run_partition)
        base = root / table / (run_partition or "")
        loose = sorted(base.rglob(LOOSE_GLOB)) if base.is_dir() else []
        if current_generations(root, run_partition) == before:
            hidden = set().union(*(generation.superseded(root, table) for generation in before.values()))
            merged = [path for generation in before.values() for path in generation.merged(root, table)]
            return [path for path in loose if path not in hidden] + merged
    raise StoreError(f"{root / GENERATIONS}: the generation records kept changing while {table} was listed")


def settle(root: Path, run_partition: str) -> int:
    """Finish what the run's last compaction left (hold the run's lock): delete the files its generation
    replaced and merged files no record names (a compaction that died), then drop the replaced list from
    the record. Returns how many files went."""
    current = read_generation(root, run_partition)
    keep = {path for table in TABLES for path in current.merged(root, table)} if current else set()
    doomed = [path for table in TABLES for path in sorted((root / table / run_partition).rglob(COMPACTED_GLOB))
              if path not in keep]
    if current:
        doomed += [path for table in current.replaced for path in current.superseded(root, table) if path.exists()]
    for path in doomed:
        path.unlink(missing_ok=True)
    if current and current.replaced:
        write_generation(root, run_partition, Generation(current.generation, current.files))
    return len(doomed)
