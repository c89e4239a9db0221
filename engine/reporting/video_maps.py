"""One video of a run with its units: the metrics rows of every method, in the run's method order, and its
maps with its frames as the figure of `aosa figure` (and the browser's figure button) draws them."""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np

from aosa.engine.errors import ConfigError
from aosa.engine.reporting.clips import clip_frames, part_of, run_parts
from aosa.engine.reporting.figure import FigureVideo
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import run_select

MODELS_SQL = "SELECT DISTINCT model FROM metrics WHERE run_id = ? AND video_id = ? ORDER BY model"
UNITS_SQL = "SELECT * FROM metrics WHERE run_id = ? AND model = ? AND video_id = ? ORDER BY method"


def video_model(con: duckdb.DuckDBPyConnection, run_id: str, video_id: str, model: str | None = None) -> str:
    """The model whose units of `video_id` the run holds: `model` when given and present, else the only one."""
    models = [name for (name,) in run_select(con, MODELS_SQL, [run_id, video_id])[1]]
    if not models:
        raise ConfigError(f"run {run_id!r} has no video {video_id!r}")
    if model is not None and model not in models:
        raise ConfigError(f"run {run_id!r} has no units of {video_id!r} on {model!r} (models: {', '.join(models)})")
    if model is None and len(models) > 1:
        raise ConfigError(f"{video_id!r} has units of several models in run {run_id!r} ({', '.join(models)}): "
                          "name one with --model")
    return model or models[0]


def video_units(con: duckdb.DuckDBPyConnection, run_id: str, model: str, video_id: str,
                parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The metrics rows of one video, one per method, in the order the run's config lists its methods."""
    columns, rows = run_select(con, UNITS_SQL, [run_id, model, video_id])
    part = part_of(parts, model)
    order = {spec["key"]: rank for rank, spec in enumerate(part["methods"])} if part else {}
    units = [dict(zip(columns, row)) for row in rows]
    return sorted(units, key=lambda unit: (order.get(unit["method"], len(order)), unit["method"]))


def figure_videos(store: StoreReader, run_id: str, videos: list[str], methods: list[str],
                  model: str | None = None) -> list[FigureVideo]:
    """Each video's frames and its maps of `methods`, for `engine.reporting.figure`; a video or map that is not
    there is a ConfigError naming it and what there is."""
    if not videos or not methods:
        raise ConfigError("a figure needs at least one video and one method")
    with store.connect(run_id) as con:
        parts = run_parts(con, run_id)
        found = []
        for video_id in videos:
            chosen = video_model(con, run_id, video_id, model)
            found.append((video_id, chosen, {unit["method"]: unit for unit in video_units(con, run_id, chosen,
                                                                                         video_id, parts)}))
    blocks = []
    for video_id, chosen, units in found:
        maps = []
        for method in methods:
            unit = units.get(method)
            if unit is None or unit["status"] != "ok" or not unit["map_path"]:
                mapped = ", ".join(key for key, unit in units.items() if unit["status"] == "ok") or "none"
                raise ConfigError(f"{video_id!r} has no map of {method!r} in run {run_id!r} (maps: {mapped})")
            maps.append((method, store.load_map(unit["map_path"]).astype(np.float32)))
        frames = clip_frames(store, run_id, chosen, video_id, parts, maps[0][1].shape).frames
        blocks.append(FigureVideo(video_id, chosen, frames, maps))
    return blocks
