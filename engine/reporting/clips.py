"""A run's video as the run saw it: the evaluate config (part) that made its units, its manifest row, and its
frames at model resolution, decoded as the run decoded them, with the target boxes in model pixels.

Where the source video (or its manifest) is gone, the frames come from the preview the run stored
(engine.store.previews); where there is none either, there are no frames and `note` says the video is missing,
so that its maps still show.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from aosa.engine.datasets.manifests import find_row
from aosa.engine.errors import AosaError, ConfigError
from aosa.engine.io.preprocess import ClipGeometry, load_clip, model_boxes
from aosa.engine.models.loading import load_model
from aosa.engine.store.previews import Box
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import run_select
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.preprocessing import Preprocessing

PARTS_SQL = """
SELECT DISTINCT config FROM run_events WHERE run_id = ? AND json_exists(config, '$.manifest') ORDER BY config
"""
CACHED_CLIPS = 64  # decoded clips kept (about 0.6 MB each at 16x112x112)


@dataclass(frozen=True)
class ClipFrames:
    """A video's uint8 (T,H,W,3) frames at model resolution (None when neither the video nor a preview is there),
    its boxes in model pixels, the decoder that read it, and a one-line note on where the frames came from."""

    frames: np.ndarray | None
    boxes: tuple[Box, ...] = ()
    decoder: str | None = None
    note: str | None = None


def run_parts(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """The evaluate configs of a run, one per (manifest, model): manifest, model, methods, start, decoder."""
    _, rows = run_select(con, PARTS_SQL, [run_id])
    return list({(part["manifest"], part["model"]): part for part in (json.loads(row[0]) for row in rows)}.values())


def part_of(parts: list[dict[str, Any]], model: str) -> dict[str, Any] | None:
    """The part of a run that evaluated `model` (the last stored, should a run hold several)."""
    return next((part for part in reversed(parts) if part["model"] == model), None)


@lru_cache(maxsize=4)
def preprocessing(model: str) -> Preprocessing:
    """How `model` cuts a clip (frames, size, mean/std, class names), from the model as the run loaded it."""
    return load_model(model, "cpu").preprocessing


def source_frames(part: dict[str, Any], row: ManifestRow) -> ClipFrames:
    """The row's clip decoded as the part decoded it (its start, and its decoder where this machine has it)."""
    frames, geometry, decoder = _decoded(str(row.path), part["model"], int(part.get("start", 0)),
                                         part.get("decoder", "auto"))
    try:
        boxes = tuple(model_boxes(row, geometry, len(frames)))
    except AosaError:
        boxes = ()
    return ClipFrames(frames, boxes, decoder)


@lru_cache(maxsize=CACHED_CLIPS)
def _decoded(path: str, model: str, start: int, decoder: str) -> tuple[np.ndarray, ClipGeometry, str]:
    """A decoded clip (read-only frames), cached: a gallery page and the video page read the same clips."""
    prep = preprocessing(model)
    try:
        clip = load_clip(path, prep, start, backend=decoder)
    except AosaError:
        if decoder == "auto" or not Path(path).exists():
            raise
        clip = load_clip(path, prep, start)  # the run's decoder (e.g. DALI on a GPU) is not on this machine
    clip.frames.setflags(write=False)
    return clip.frames, clip.geometry, clip.decoder


def clip_frames(store: StoreReader, run_id: str, model: str, video_id: str, parts: list[dict[str, Any]],
                shape: tuple[int, ...] | None = None) -> ClipFrames:
    """A run's video as `model` saw it: from the source, else the stored preview, else no frames and a note.
    Frames whose (T, H, W) differ from `shape` (the maps', which may span a whole video) are not used."""
    try:
        part = part_of(parts, model)
        if part is None:
            raise ConfigError(f"the run stored no evaluate config for {model}")
        row = find_row(Path(part["manifest"]), video_id)
        if row is None:
            raise ConfigError(f"{video_id} is not in the manifest {part['manifest']}")
        found = source_frames(part, row)
        if shape is not None and found.frames.shape[:3] != tuple(shape):
            raise ConfigError(f"the maps span {shape[0]} frames of {shape[2]}x{shape[1]}, its clip "
                              f"{len(found.frames)} of {found.frames.shape[2]}x{found.frames.shape[1]}")
        return found
    except AosaError as exc:
        why = f"The source video is {'missing' if exc.kind == 'missing_file' else 'not shown'} ({exc})"
        preview = store.load_preview(run_id, model, video_id)
        if preview is None or (shape is not None and preview.frames.shape[:3] != tuple(shape)):
            return ClipFrames(None, note=f"{why}; the maps show without frames.")
        return ClipFrames(preview.frames, preview.boxes, preview.decoder,
                          f"{why}; the frames are the preview the run stored.")
