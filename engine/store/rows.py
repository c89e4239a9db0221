"""A unit's rows, checked before anything is stored: its metrics, timings and maps rows, its map files and, with a
video's first unit, the video's preview (engine.store.previews)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pyarrow as pa

from aosa.engine.errors import AosaError, ConfigError
from aosa.engine.store.paths import partition
from aosa.schemas.tables import build_table

Rows = Sequence[Mapping[str, Any]]


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
class PreviewFile:
    """A video's preview (a JPEG of engine.store.previews) to save at `path` (relative to the store root)."""

    path: str
    data: bytes


@dataclass(frozen=True)
class UnitRows:
    """One finished unit's checked rows (timings, maps, metrics tables), the map files they point to, and the
    preview of its video where the unit is the first of it stored."""

    tables: dict[str, pa.Table]
    maps: tuple[MapFile, ...] = ()
    previews: tuple[PreviewFile, ...] = ()


def unit_rows(run_id: str, metrics_rows: Rows, timing_rows: Rows = (), map_rows: Rows = (),
              maps: Sequence[MapFile] = (), previews: Sequence[PreviewFile] = ()) -> UnitRows:
    """Check a unit's rows now (a bad row is the caller's error, not a failed flush later)."""
    if not metrics_rows:
        raise ConfigError("a unit of work needs at least one metrics row")
    tables = {"timings": checked_table("timings", run_id, timing_rows), "maps": checked_table("maps", run_id, map_rows),
              "metrics": checked_table("metrics", run_id, metrics_rows)}
    methods = set(tables["metrics"].column("method").to_pylist())
    for name in ("timings", "maps"):
        stray = set(tables[name].column("method").to_pylist()) - methods
        if stray:
            raise ConfigError(f"{name} rows of method {sorted(stray)[0]!r} have no metrics row in their unit")
    return UnitRows(tables, tuple(maps), tuple(previews))


def map_file(run_id: str, video_id: str, model: str, method: str, saliency: np.ndarray) -> MapFile:
    """`saliency` as float16 at its place in the store (written with its unit: RunWriter.write_units)."""
    saliency = np.asarray(saliency)
    half = saliency.astype(np.float16)
    if np.isfinite(saliency).all() and not np.isfinite(half).all():
        raise AosaError(f"map of {video_id} / {model} / {method} exceeds the float16 range")
    relative = PurePosixPath("maps", partition("run_id", run_id), partition("model", model),
                             partition("method", method), partition("video_id", video_id) + ".npy")
    return MapFile(str(relative), half)
