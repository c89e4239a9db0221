"""Reading the result store: DuckDB views over the files readers see, the units and configs of a run, saved maps
and previews."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import duckdb
import numpy as np

from aosa.engine.errors import ConfigError
from aosa.engine.store.generations import visible_files
from aosa.engine.store.paths import partition
from aosa.engine.store.previews import Preview, decode_preview, preview_path
from aosa.engine.store.sql import QueryLimits, create_latest_view, create_view, run_select, sandbox
from aosa.schemas.tables import TABLES

RUN_EVENTS = "run_events"  # the raw `runs` rows, one per status change; the `runs` view is each run's latest


class StoreReader:
    """Views `runs`, `run_events`, `metrics`, `timings`, `maps` (schemas/tables.py) and saved maps under `root`."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

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

    def files(self, name: str, run_id: str | None = None) -> list[Path]:
        """The Parquet files of a table (of one run) that readers see (engine.store.generations)."""
        return visible_files(self.root, name, partition("run_id", run_id) if run_id is not None else None)

    def run_ids(self) -> list[str]:
        """Every run id with a partition in some table."""
        found = {unquote(folder.name.partition("=")[2]) for name in TABLES if (self.root / name).is_dir()
                 for folder in (self.root / name).glob("run_id=*") if folder.is_dir()}
        return sorted(found)

    def stored_units(self, run_id: str) -> set[tuple[str, str, str]]:
        """(video_id, model, method) of every unit of `run_id` already in metrics: what a resume skips."""
        with self.connect(run_id) as con:
            _, rows = run_select(con, "SELECT DISTINCT video_id, model, method FROM metrics")
        return {(video, model, method) for video, model, method in rows}

    def run_configs(self, run_id: str) -> list[dict[str, Any]]:
        """The config of every `runs` row of `run_id`, oldest first (one per status change)."""
        with self.connect(run_id) as con:
            _, rows = run_select(con, f"SELECT config FROM {RUN_EVENTS} ORDER BY created_at")
        return [json.loads(config) for (config,) in rows]

    def load_map(self, relative_path: str) -> np.ndarray:
        """A saved map (float16, at a `map_path` of metrics); refuses paths outside the store."""
        path = (self.root / relative_path).resolve()
        if not path.is_relative_to(self.root):
            raise ConfigError(f"map path {relative_path!r} lies outside the store {self.root}")
        if not path.is_file():
            raise ConfigError(f"no map {relative_path!r} in the store {self.root}")
        return np.load(path, allow_pickle=False)

    def load_preview(self, run_id: str, model: str, video_id: str) -> Preview | None:
        """The preview the run stored of a video (engine.store.previews), or None where it stored none."""
        path = self.root / preview_path(run_id, model, video_id)
        return decode_preview(path.read_bytes()) if path.is_file() else None
