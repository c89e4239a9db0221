"""The result store: hive-partitioned Parquet in a local directory, written atomically, read with DuckDB.

Layout under the root (partition values quoted with `partition_value`, reversed by `unquote`):

    runs/run_id=<id>/part-<uuid>.parquet                        one file per `write_run` (status changes)
    metrics/run_id=<id>/method=<method key>/part-<group>.parquet one file per flush group (units of one method)
    timings/run_id=<id>/part-<group>.parquet                    the same group's timings ...
    maps/run_id=<id>/part-<group>.parquet                       ... and rows saying where each of its maps lies
    maps/run_id=<id>/model=<m>/method=<k>/video_id=<v>.npy      the float16 saliency maps themselves
    <table>/run_id=<id>/.../gen-<generation>-<n>.parquet        merged files of `aosa compact`
    generations/run_id=<id>.json                                which merged files a compacted run reads

Partition columns are ALSO stored inside every file (the directories only prune and help people browse);
readers turn hive partitioning off and union files by column name. Every file is written atomically
(engine.store.paths.write_atomic). Units are stored in groups (one flush of one method, engine.store.writer):
the group's timings and maps files come first and its metrics file, of the same name, last; a unit counts as
stored once its metrics rows land, and `maintenance.discard_unfinished` removes the timings and maps of a
group whose metrics never landed, so a resumed run stores nothing twice. Which files a reader sees is decided
in one place, engine.store.generations.visible_files (the compaction protocol).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aosa.engine.errors import AosaError, ConfigError
from aosa.engine.store.generations import visible_files
from aosa.engine.store.lock import RunLock
from aosa.engine.store.paths import loose_name, partition, partition_value, write_atomic
from aosa.engine.store.sql import QueryLimits, create_latest_view, create_view, run_select, sandbox
from aosa.schemas.tables import TABLES, build_table, schema_of

__all__ = ["MapFile", "ResultStore", "UnitRows", "partition", "partition_value", "unit_rows"]

Rows = Sequence[Mapping[str, Any]]
RUN_EVENTS = "run_events"  # the raw `runs` rows, one per status change; the `runs` view is each run's latest
UNIT_TABLES = ("timings", "maps", "metrics")  # a group's files in the order they are written: metrics last


def checked_table(name: str, run_id: str, rows: Rows) -> pa.Table:
    """Rows of one run as a checked table (see schemas.tables.build_table)."""
    if not run_id:
        raise ConfigError("a run id must not be empty")
    foreign = {str(row["run_id"]) for row in rows if row.get("run_id") not in (None, run_id)}
    if foreign:
        raise ConfigError(f"rows of run {sorted(foreign)[0]!r} written to run {run_id!r}")
    return build_table(name, [{**row, "run_id": run_id} for row in rows])


@dataclass(frozen=True)
class MapFile:
    """A saliency map to save as a float16 .npy file at `path` (relative to the store root)."""

    path: str
    values: np.ndarray


@dataclass(frozen=True)
class UnitRows:
    """One finished unit's checked rows (timings, maps, metrics tables) and the map files they point to."""

    tables: dict[str, pa.Table]
    maps: tuple[MapFile, ...] = ()


def unit_rows(run_id: str, metrics_rows: Rows, timing_rows: Rows = (), map_rows: Rows = (),
              maps: Sequence[MapFile] = ()) -> UnitRows:
    """Check a unit's rows now (a bad row is the caller's error, not a failed flush later)."""
    if not metrics_rows:
        raise ConfigError("a unit of work needs at least one metrics row")
    tables = {"timings": checked_table("timings", run_id, timing_rows),
              "maps": checked_table("maps", run_id, map_rows), "metrics": checked_table("metrics", run_id, metrics_rows)}
    methods = set(tables["metrics"].column("method").to_pylist())
    for name in ("timings", "maps"):
        stray = set(tables[name].column("method").to_pylist()) - methods
        if stray:
            raise ConfigError(f"{name} rows of method {sorted(stray)[0]!r} have no metrics row in their unit")
    return UnitRows(tables, tuple(maps))


class ResultStore:
    """Tables `runs`, `metrics`, `timings`, `maps` (schemas/tables.py) and saved maps under `root`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    # -- writing ------------------------------------------------------------------------------------------

    def write_run(self, run_row: Mapping[str, Any]) -> None:
        """Append one `runs` row (a new row per status change; the latest `created_at` is current)."""
        run_id = str(run_row.get("run_id") or "")
        self._write_parquet("runs", run_id, [], uuid.uuid4().hex, checked_table("runs", run_id, [run_row]))

    def write_unit(self, run_id: str, metrics_rows: Rows, timing_rows: Rows = (), map_rows: Rows = ()) -> None:
        """Store one finished unit now: every row is checked first, then written as `write_units` does."""
        self.write_units(run_id, [unit_rows(run_id, metrics_rows, timing_rows, map_rows)])

    def write_units(self, run_id: str, units: Sequence[UnitRows]) -> None:
        """Store finished units, several per file: their maps, then per method one group of files sharing
        a name, timings and maps first and metrics last (the group counts as stored once metrics lands)."""
        for unit in units:
            self.write_maps(unit)
        tables = {name: pa.concat_tables([unit.tables[name] for unit in units]) for name in UNIT_TABLES}
        for method in sorted(set(tables["metrics"].column("method").to_pylist())):
            group = uuid.uuid4().hex
            for name in UNIT_TABLES:
                rows = tables[name].filter(pc.equal(tables[name].column("method"), method))
                if rows.num_rows:
                    partitions = [partition("method", method)] if name == "metrics" else []
                    self._write_parquet(name, run_id, partitions, group, rows)

    def map_file(self, run_id: str, video_id: str, model: str, method: str, saliency: np.ndarray) -> MapFile:
        """`saliency` as float16 at its place in the store (not written yet; see `write_maps`)."""
        saliency = np.asarray(saliency)
        half = saliency.astype(np.float16)
        if np.isfinite(saliency).all() and not np.isfinite(half).all():
            raise AosaError(f"map of {video_id} / {model} / {method} exceeds the float16 range")
        relative = PurePosixPath("maps", partition("run_id", run_id), partition("model", model),
                                 partition("method", method), partition("video_id", video_id) + ".npy")
        return MapFile(str(relative), half)

    def write_maps(self, unit: UnitRows) -> None:
        """Write a unit's map files; a map left by a unit that never got stored is overwritten on resume."""
        for map_file in unit.maps:
            write_atomic(self.root / map_file.path, lambda file, values=map_file.values: np.save(file, values))

    def save_map(self, run_id: str, video_id: str, model: str, method: str, saliency: np.ndarray) -> str:
        """Save `saliency` as float16 .npy now; returns its path relative to the root (for `map_path`)."""
        map_file = self.map_file(run_id, video_id, model, method, saliency)
        self.write_maps(UnitRows({}, (map_file,)))
        return map_file.path

    def _write_parquet(self, name: str, run_id: str, partitions: list[str], group: str, table: pa.Table) -> None:
        folder = self.root / name / partition("run_id", run_id) / Path(*partitions)
        write_atomic(folder / loose_name(group), lambda file: pq.write_table(table, file))

    # -- reading ------------------------------------------------------------------------------------------

    def load_map(self, relative_path: str) -> np.ndarray:
        """A map saved by `save_map` (float16); refuses paths outside the store."""
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.root):
            raise ConfigError(f"map path {relative_path!r} lies outside the store {self.root}")
        if not path.is_file():
            raise ConfigError(f"no map {relative_path!r} in the store {self.root}")
        return np.load(path, allow_pickle=False)

    def connect(self, run_id: str | None = None, read_only: bool = False,
                limits: QueryLimits = QueryLimits()) -> duckdb.DuckDBPyConnection:
        """In-memory DuckDB with one view per table (only `run_id`'s partitions when given), over the files
        visible when it connects; `runs` is each run's latest row, `run_events` every row.

        `read_only` sandboxes the connection for user SQL within `limits` (engine.store.sql.sandbox).
        """
        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone='UTC'")
        for name, schema in TABLES.items():
            create_view(con, RUN_EVENTS if name == "runs" else name, schema, self.files(name, run_id))
        create_latest_view(con, "runs", RUN_EVENTS, key="run_id", order="created_at")
        if read_only:
            sandbox(con, self.root, limits)
        return con

    def table(self, name: str, run_id: str | None = None) -> pa.Table:
        """Every row of one table or view (of one run), as the current schema plus columns only old files have."""
        schema = schema_of("runs" if name == RUN_EVENTS else name)
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

    def lock(self, run_id: str) -> RunLock:
        """The run's writer lock: one process at a time writes a run id (`with store.lock(run_id): ...`)."""
        return RunLock(self.root, run_id, partition("run_id", run_id))

    def files(self, name: str, run_id: str | None = None) -> list[Path]:
        """The Parquet files of a table (of one run) that readers see (engine.store.generations)."""
        return visible_files(self.root, name, partition("run_id", run_id) if run_id is not None else None)
