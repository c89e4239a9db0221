"""`aosa compact`: merge a run's small Parquet files into a few large ones, atomically.

Protocol, run while holding the run's lock (a live writer refuses it; none adds or removes files meanwhile):

1. Settle: `discard_unfinished` finishes a previous compaction's cleanup and drops what a crashed writer
   left (temp files, timings and maps of groups whose metrics never landed), so only stored units merge.
2. Merge: per table and partition folder (metrics per method; runs, timings and maps per run), every loose
   file and every merged file under TARGET_ROWS rows is read as readers read it (DuckDB, union by name)
   and written as `gen-<generation>-<n>.parquet` files of at most TARGET_ROWS rows / about TARGET_BYTES,
   each atomically. Readers read merged files only when a generation record names them: none is visible.
3. Commit: the run's generation record `generations/run_id=<id>.json` (temp file + rename) names the new
   generation's files and every file they replace. This one rename switches readers to the new set.
4. Clean up (`generations.settle`): delete the replaced files and unnamed merged files, then drop the
   replaced list from the record.

A crash before 3 leaves the old set visible and the partial generation unnamed (deleted by the next settle);
a crash after 3 leaves the new set visible and the replaced files hidden until the next settle deletes them.
`aosa compact` and `aosa evaluate` settle first, so either recovers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from aosa.engine.store.generations import Generation, settle, write_generation
from aosa.engine.store.maintenance import discard_unfinished
from aosa.engine.store.paths import LOOSE_GLOB, compacted_name, write_atomic
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import parquet_dataset
from aosa.engine.store.writer import RunWriter
from aosa.schemas.tables import TABLES, schema_of

TARGET_ROWS = 100_000
TARGET_BYTES = 128 * 2**20  # in memory (Arrow); the Parquet file is smaller
BATCH_ROWS = 8_192


@dataclass(frozen=True)
class Compaction:
    """What compacting one run did: visible files per table before and after."""

    run_id: str
    before: dict[str, int]
    after: dict[str, int]

    def describe(self) -> str:
        changes = ", ".join(f"{name} {self.before[name]} -> {self.after[name]}" for name in TABLES)
        return f"run {self.run_id!r}: files {changes}"


def compact_run(root: Path, run_id: str, target_rows: int = TARGET_ROWS) -> Compaction:
    """Merge `run_id`'s files in the store at `root` by the protocol above; refused while a writer holds the run."""
    store = StoreReader(root)
    with RunWriter(root, run_id) as writer:
        discard_unfinished(writer)
        before = {name: store.files(name, run_id) for name in TABLES}
        generation = uuid.uuid4().hex[:16]
        files: dict[str, list[str]] = {}
        replaced: dict[str, list[str]] = {}
        with duckdb.connect(":memory:") as con:
            con.execute("SET TimeZone='UTC'")
            for name, paths in before.items():
                merged, gone = compact_table(con, name, paths, generation, target_rows)
                files[name] = [relative(store.root, path) for path in merged]
                replaced[name] = [relative(store.root, path) for path in gone]
        counts = {name: len(paths) for name, paths in before.items()}
        if not any(replaced.values()):
            return Compaction(run_id, counts, counts)  # nothing small to merge
        write_generation(store.root, writer.partition, Generation(generation, files, replaced))
        settle(store.root, writer.partition)
        return Compaction(run_id, counts, {name: len(store.files(name, run_id)) for name in TABLES})


def compact_table(con: duckdb.DuckDBPyConnection, name: str, paths: Sequence[Path], generation: str,
                  target_rows: int) -> tuple[list[Path], list[Path]]:
    """One table's visible files of a run -> (its files in the new generation, the files they replace)."""
    folders: dict[Path, list[Path]] = {}
    for path in paths:
        folders.setdefault(path.parent, []).append(path)
    kept, gone = [], []
    for folder, members in sorted(folders.items()):
        small = [path for path in members if path.match(LOOSE_GLOB) or pq.ParquetFile(path).metadata.num_rows
                 < target_rows]
        if len(small) < 2 and not any(path.match(LOOSE_GLOB) for path in small):
            kept += members  # one merged file, or full ones: nothing to gain
            continue
        merged = set(small)
        kept += [path for path in members if path not in merged]
        kept += merge(con, name, small, folder, generation, target_rows)
        gone += small
    return kept, gone


def merge(con: duckdb.DuckDBPyConnection, name: str, paths: Sequence[Path], folder: Path, generation: str,
          target_rows: int) -> list[Path]:
    """Rows of `paths`, unioned by column name as readers see them, as merged files in `folder`."""
    reader = con.from_arrow(parquet_dataset(schema_of(name), paths)).to_arrow_reader(BATCH_ROWS)  # never globbed
    written: list[Path] = []
    chunk: list[pa.RecordBatch] = []
    rows = size = 0
    for batch in reader:  # one batch per small input file: sizes are counted, not summed again
        while batch.num_rows:
            part, batch = batch.slice(0, target_rows - rows), batch.slice(target_rows - rows)
            chunk.append(part)
            rows, size = rows + part.num_rows, size + part.nbytes
            if rows >= target_rows or size >= TARGET_BYTES:
                written.append(write_merged(name, chunk, folder / compacted_name(generation, len(written))))
                chunk, rows, size = [], 0, 0
    if chunk:
        written.append(write_merged(name, chunk, folder / compacted_name(generation, len(written))))
    return written


def write_merged(name: str, batches: list[pa.RecordBatch], path: Path) -> Path:
    """Batches as one Parquet file, columns of the table's schema typed as it says (nullable: old files may
    lack a required column), columns only old files have kept as they are."""
    table = pa.Table.from_batches(batches)
    schema = schema_of(name)
    fields = [schema.field(column).with_nullable(True) if column in schema.names else table.schema.field(column)
              for column in table.column_names]
    table = table.cast(pa.schema(fields, metadata=schema.metadata))
    write_atomic(path, lambda file: pq.write_table(table, file, row_group_size=BATCH_ROWS * 8))
    return path


def relative(root: Path, path: Path) -> str:
    return path.relative_to(root).as_posix()
