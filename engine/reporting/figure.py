"""The paper's figure of saliency maps: per video, its frames in columns and a row per method, each map over its
frames (scaled to its own range, as the overlays are), with a colour bar; PDF or PNG.

    data = figure_bytes([FigureVideo("clip-1", "probe", frames, [("aosa", saliency), ("osa", other)])],
                        [0, 5, 10, 15], "pdf")
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from aosa.engine.errors import ConfigError
from aosa.engine.reporting.visualize import COLORMAP, colour_map, overlay

FORMATS = ("pdf", "png")
DEFAULT_COLUMNS = 4
CELL_INCHES = 1.25


@dataclass(frozen=True)
class FigureVideo:
    """One video's block: its uint8 (T,H,W,3) frames (None: maps alone) and its (T,H,W) maps by method."""

    video_id: str
    model: str
    frames: np.ndarray | None
    maps: list[tuple[str, np.ndarray]]


def frame_indices(text: str | None, count: int) -> list[int]:
    """Frames given as `0,5,10,15` (each below `count`), or DEFAULT_COLUMNS evenly spaced ones."""
    if not text:
        return sorted(set(np.linspace(0, count - 1, min(count, DEFAULT_COLUMNS)).round().astype(int).tolist()))
    try:
        frames = [int(part) for part in text.split(",")]
    except ValueError:
        raise ConfigError(f"frames must be integers separated by commas, got {text!r}") from None
    wrong = [frame for frame in frames if not 0 <= frame < count]
    if wrong:
        raise ConfigError(f"frame {wrong[0]} is outside the clip's {count} frames (0..{count - 1})")
    return frames


def figure_bytes(videos: list[FigureVideo], frames: list[int], fmt: str) -> bytes:
    """The figure as a PDF or PNG file's bytes."""
    if fmt not in FORMATS:
        raise ConfigError(f"a figure is written as {' or '.join(FORMATS)}, not {fmt!r}")
    figure = Figure(figsize=(CELL_INCHES * len(frames) + 1.6,
                             sum(CELL_INCHES * (len(v.maps) + (v.frames is not None)) + 0.5 for v in videos)),
                    layout="constrained")
    FigureCanvasAgg(figure)
    blocks = figure.subfigures(len(videos), 1, squeeze=False,
                               height_ratios=[len(v.maps) + (v.frames is not None) + 0.4 for v in videos])[:, 0]
    for block, video in zip(blocks, videos):
        _block(block, video, frames)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=200, metadata={"Creator": "aosa figure"})
    return buffer.getvalue()


def _block(block: Figure, video: FigureVideo, frames: list[int]) -> None:
    """One video: a row of its frames (when there are frames), then a row per method, and a colour bar."""
    rows = ([("frames", video.frames)] if video.frames is not None else []) + [
        (method, overlay(video.frames, saliency) if video.frames is not None else colour_map(saliency))
        for method, saliency in video.maps]
    axes = block.subplots(len(rows), len(frames), squeeze=False)
    for (name, images), line in zip(rows, axes):
        for column, (ax, frame) in enumerate(zip(line, frames)):
            ax.imshow(images[frame], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if column == 0:
                ax.set_ylabel(name, fontsize=9)
    for ax, frame in zip(axes[0], frames):
        ax.set_title(f"frame {frame}", fontsize=8)
    block.suptitle(f"{video.video_id} ({video.model})", fontsize=10)
    block.colorbar(ScalarMappable(Normalize(0.0, 1.0), COLORMAP), ax=axes, shrink=0.8,
                   label="saliency (each map to its range)")
