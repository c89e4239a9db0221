"""The result store: hive-partitioned Parquet in a local directory, written atomically, read with DuckDB.

Layout under the root (partition values quoted with `partition_value`, reversed by `unquote`):

    runs/run_id=<id>/part-<uuid>.parquet                       one file per `write_run` (status changes)
    metrics/run_id=<id>/method=<method key>/part-<uuid>.parquet one file per finished unit and method
    timings/run_id=<id>/part-<uuid>.parquet                    one file per unit
    maps/run_id=<id>/part-<uuid>.parquet                       one file per unit (rows: where each map lies)
    maps/run_id=<id>/model=<m>/method=<k>/video_id=<v>.npy     the float16 saliency maps themselves

Partition columns are ALSO stored inside every file (the directories only prune and help people browse);
readers turn hive partitioning off and union files by column name. Every file is written under a hidden
`.<name>.tmp` beside its final name, flushed to disk, then renamed, so readers never see a partial file.
A unit counts as stored once its metrics file exists (written last); `discard_unfinished` removes the
timings and maps a crashed unit left behind, so a resumed run stores nothing twice. All paths go through
`_write_atomic` and `_files`, the two places an fsspec/pyarrow filesystem would plug in.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import quote

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import AosaError, ConfigError
from engine.store.sql import create_view, run_select, sandbox
from schemas.tables import TABLES, build_table, schema_of

Rows = Sequence[Mapping[str, Any]]
PART_GLOB = "part-*.parquet"  # every table file; temp files (".part-...tmp") and hidden files never match


def partition_value(value: str) -> str:
    """A path-safe, reversible (urllib.parse.unquote) form of a partition value: only [A-Za-z0-9_.~-] stay."""
    quoted = quote(value, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted  # never a hidden or '..' name


def partition(key: str, value: str) -> str:
    """One hive directory name, `key=<quoted value>`."""
    return f"{key}={partition_value(value)}"


class ResultStore:
    """Tables `runs`, `metrics`, `timings`, `maps` (schemas/tables.py) and saved maps under `root`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    # -- writing ------------------------------------------------------------------------------------------

    def write_run(self, run_row: Mapping[str, Any]) -> None:
        """Append one `runs` row (a new row per status change; the latest `created_at` is current)."""
        run_id = str(run_row.get("run_id") or "")
        self._write_parquet("runs", run_id, [], uuid.uuid4().hex, self._build("runs", run_id, [run_row]))

    def write_unit(self, run_id: str, metrics_rows: Rows, timing_rows: Rows = (), map_rows: Rows = ()) -> None:
        """Store one finished unit of work: every row is checked first, then timings, maps and, last,
        metrics (one file per method) are written; all files of the unit share one name."""
        if not metrics_rows:
            raise ConfigError("a unit of work needs at least one metrics row")
        by_method: dict[str, list[Mapping[str, Any]]] = {}
        for row in metrics_rows:
            by_method.setdefault(str(row.get("method", "")), []).append(row)
        files = [("timings", [], self._build("timings", run_id, timing_rows)),
                 ("maps", [], self._build("maps", run_id, map_rows))]
        files += [("metrics", [partition("method", method)], self._build("metrics", run_id, rows))
                  for method, rows in by_method.items()]
        unit = uuid.uuid4().hex
        for name, partitions, table in files:
            if table.num_rows:
                self._write_parquet(name, run_id, partitions, unit, table)

    def save_map(self, run_id: str, video_id: str, model: str, method: str, saliency: np.ndarray) -> str:
        """Save `saliency` as float16 .npy; returns its path relative to the root (for `map_path`)."""
        saliency = np.asarray(saliency)
        half = saliency.astype(np.float16)
        if np.isfinite(saliency).all() and not np.isfinite(half).all():
            raise AosaError(f"map of {video_id} / {model} / {method} exceeds the float16 range")
        relative = PurePosixPath("maps", partition("run_id", run_id), partition("model", model),
                                 partition("method", method), partition("video_id", video_id) + ".npy")
        self._write_atomic(self.root / relative, lambda file: np.save(file, half))
        return str(relative)

    @staticmethod
    def _build(name: str, run_id: str, rows: Rows) -> pa.Table:
        """Rows of one run as a checked table (see schemas.tables.build_table)."""
        if not run_id:
            raise ConfigError("a run id must not be empty")
        foreign = {str(row["run_id"]) for row in rows if row.get("run_id") not in (None, run_id)}
        if foreign:
            raise ConfigError(f"rows of run {sorted(foreign)[0]!r} written to run {run_id!r}")
        return build_table(name, [{**row, "run_id": run_id} for row in rows])

    def _write_parquet(self, name: str, run_id: str, partitions: list[str], unit: str, table: pa.Table) -> None:
        folder = self.root / name / partition("run_id", run_id) / Path(*partitions)
        self._write_atomic(folder / f"part-{unit}.parquet", lambda file: pq.write_table(table, file))

    @staticmethod
    def _write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
        """`write` into a hidden temp file beside `path`, fsync, then rename over `path`."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with open(temp, "wb") as file:
                write(file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)

    # -- reading ------------------------------------------------------------------------------------------

    def load_map(self, relative_path: str) -> np.ndarray:
        """A map saved by `save_map` (float16); refuses paths outside the store."""
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.root):
            raise ConfigError(f"map path {relative_path!r} lies outside the store {self.root}")
        if not path.is_file():
            raise ConfigError(f"no map {relative_path!r} in the store {self.root}")
        return np.load(path, allow_pickle=False)

    def connect(self, run_id: str | None = None, read_only: bool = False) -> duckdb.DuckDBPyConnection:
        """In-memory DuckDB with one view per table (only `run_id`'s partitions when given).

        `read_only` sandboxes the connection for user SQL (engine.store.sql.sandbox).
        """
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone='UTC'")
        for name, schema in TABLES.items():
            create_view(con, name, schema, self._glob(name, run_id))
        if read_only:
            sandbox(con, self.root)
        return con

    def table(self, name: str, run_id: str | None = None) -> pa.Table:
        """Every row of one table (of one run), as the current schema plus any columns only old files have."""
        schema = schema_of(name)
        with self.connect(run_id) as con:
            result = pa.table(con.sql(f'SELECT * FROM "{name}"'))
        fields = [schema.field(column) if column in schema.names else result.schema.field(column)
                  for column in result.column_names]
        return pa.Table.from_arrays([column.cast(field.type) for column, field in zip(result.columns, fields)],
                                    schema=pa.schema(fields, metadata=schema.metadata))

    def stored_units(self, run_id: str) -> set[tuple[str, str, str]]:
        """(video_id, model, method) of every unit of `run_id` already in metrics: what a resume skips."""
        with self.connect(run_id) as con:
            _, rows = run_select(con, "SELECT DISTINCT video_id, model, method FROM metrics")
        return {(video, model, method) for video, model, method in rows}

    def discard_unfinished(self, run_id: str) -> int:
        """Before resuming `run_id` (no writer running): delete its temp files and the timings and maps of
        units whose metrics never landed; returns how many files went."""
        run = partition("run_id", run_id)
        finished = {path.name for path in self._files("metrics", run)}
        doomed = [path for name in TABLES for path in (self.root / name / run).rglob(".*.tmp")]
        doomed += [path for name in ("timings", "maps") for path in self._files(name, run)
                   if path.name not in finished]
        for path in doomed:
            path.unlink(missing_ok=True)
        return len(doomed)

    def _files(self, name: str, run_partition: str = "") -> Iterator[Path]:
        """The finished Parquet files of a table (of one run partition); temp and hidden files never match."""
        return (self.root / name / run_partition).rglob(PART_GLOB)

    def _glob(self, name: str, run_id: str | None) -> str | None:
        """The DuckDB glob of a table's files, or None while it has none (so the view reads as empty)."""
        run = partition("run_id", run_id) if run_id is not None else ""
        if next(self._files(name, run), None) is None:
            return None
        return str(self.root / name / run / "**" / PART_GLOB)
