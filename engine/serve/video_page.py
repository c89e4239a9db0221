"""What the Video page shows of one (run, model, video): every unit's metrics and curves, the frames the model saw
(engine.reporting.clips) with the target boxes, the clip's shape for the player, and the other runs of the video."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np

from aosa.engine.errors import AosaError, ConfigError
from aosa.engine.reporting.clips import ClipFrames, clip_frames, preprocessing, run_parts
from aosa.engine.reporting.video_maps import video_units
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import run_select

RUNS_SQL = """
SELECT DISTINCT run_id, model FROM metrics WHERE video_id = ? AND status = 'ok' ORDER BY run_id, model
"""
MAP_SQL = """
SELECT map_path FROM metrics WHERE run_id = ? AND model = ? AND video_id = ? AND method = ? AND status = 'ok'
"""
SHAPE_SQL = "SELECT shape FROM maps WHERE run_id = ? AND model = ? AND video_id = ? LIMIT 1"
CURVES = ("deletion_curve", "insertion_curve")
SHOWN = {"deletion_auc", "insertion_auc", "overall", "score", "seconds_total", "seconds_model"}  # in every panel


@dataclass(frozen=True)
class ClipView:
    """One run's units of a video, its frames (or why there are none), its (T, H, W), and the model's classes."""

    run_id: str
    model: str
    video_id: str
    units: list[dict[str, Any]]
    frames: ClipFrames
    shape: tuple[int, int, int] | None
    classes: tuple[str, ...] = ()

    @property
    def mapped(self) -> list[dict[str, Any]]:
        """The units with a map, in the run's method order."""
        return [unit for unit in self.units if unit["status"] == "ok" and unit["map_path"]]

    @property
    def facts(self) -> dict[str, Any]:
        """Label, target, predicted class and the target's score on the clean clip (the same for every unit), and a
        whole-video unit's frames, window hop and evidence segment (evaluate --clips)."""
        unit = (self.mapped or self.units)[0]
        return {key: unit.get(key) for key in ("label", "target", "predicted", "score", "decoder", "video_frames",
                                               "hop", "segment_start", "segment_end")}

    def class_name(self, index: int | None) -> str:
        """A class index with its name where the model names its classes."""
        if index is None:
            return "-"
        return f"{index} ({self.classes[index]})" if 0 <= index < len(self.classes) else str(index)


def clip_view(store: StoreReader, run_id: str, model: str, video_id: str) -> ClipView:
    """The view of a stored video; ConfigError when the run holds no unit of it."""
    with store.connect(run_id) as con:
        units = video_units(con, run_id, model, video_id, run_parts(con, run_id))
        if not units:
            raise ConfigError(f"run {run_id!r} has no video {video_id!r} on model {model!r}")
        frames = video_frames(store, con, run_id, model, video_id)
    mapped = [unit for unit in units if unit["status"] == "ok" and unit["map_path"]]
    shape = frames.frames.shape[:3] if frames.frames is not None else (
        tuple(store.load_map(mapped[0]["map_path"]).shape) if mapped else None)
    return ClipView(run_id, model, video_id, units, frames, shape, _classes(model))


def video_frames(store: StoreReader, con: duckdb.DuckDBPyConnection, run_id: str, model: str,
                 video_id: str) -> ClipFrames:
    """The frames shown under a video's maps: engine.reporting.clips.clip_frames, held to the maps' shape."""
    shapes = run_select(con, SHAPE_SQL, [run_id, model, video_id])[1]
    return clip_frames(store, run_id, model, video_id, run_parts(con, run_id), shapes[0][0] if shapes else None)


def _classes(model: str) -> tuple[str, ...]:
    try:
        return tuple(preprocessing(model).classes or ())
    except AosaError:
        return ()


def runs_with_video(con: duckdb.DuckDBPyConnection, video_id: str) -> list[tuple[str, str]]:
    """(run, model) of every run that mapped the video: what the page can show beside it."""
    return [tuple(row) for row in run_select(con, RUNS_SQL, [video_id])[1]]


def unit_map(store: StoreReader, run_id: str, model: str, video_id: str, method: str) -> np.ndarray:
    """A unit's saved map as float32 (T, H, W); ConfigError when the unit has none."""
    with store.connect(run_id) as con:
        rows = run_select(con, MAP_SQL, [run_id, model, video_id, method])[1]
    if not rows or not rows[0][0]:
        raise ConfigError(f"run {run_id!r} has no map of {method!r} for {video_id!r} on {model!r}")
    return store.load_map(rows[0][0]).astype(np.float32)


def other_curves(unit: dict[str, Any]) -> dict[str, list[float]]:
    """The unit's curves beyond deletion and insertion, its columns that hold lists of floats: a whole-video unit's
    per-window scores and evidence curve (evaluate --clips), and any later one, are drawn under its map."""
    return {name: value for name, value in unit.items()
            if name not in CURVES and isinstance(value, list) and value and all(isinstance(v, float) for v in value)}


def other_measures(unit: dict[str, Any]) -> dict[str, float | bool]:
    """The unit's measures beyond those every panel shows: a whole-video unit's temporal pointing and evidence
    mass (evaluate --clips), and any later float or yes/no column."""
    return {name: value for name, value in unit.items() if name not in SHOWN and isinstance(value, (float, bool))}
