"""When a whole video's evidence is, as a picture: a strip of frames with the stitched map over them, and under it
each window's target probability and the temporal evidence curve, on one frame axis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aosa.engine.reporting.overlay_video import blend

STRIP = 8  # frames shown above the curves


def strip_frames(frames: int, count: int = STRIP) -> list[int]:
    """Up to `count` evenly spaced frame indices of a video, first and last included."""
    return sorted({int(round(i)) for i in np.linspace(0, frames - 1, min(frames, count))})


def save_timeline(frames: np.ndarray, saliency: np.ndarray, timeline: dict[str, Any], path: Path, title: str = "",
                  segment: tuple[int, int] | None = None) -> Path:
    """Write a PNG of the strip of model-resolution frames (T, h, w, 3) under the map (T, h, w), coloured on the
    whole video's range, above the two curves of `timeline` (WholeExplanation.timeline); `segment` [first, end),
    when known, is shaded."""
    picked = strip_frames(len(frames))
    figure = Figure(figsize=(1.6 * len(picked) + 1.0, 5.2), layout="constrained")
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(2, len(picked), height_ratios=(1, 1.5))
    lo, hi = float(saliency.min()), float(saliency.max())
    for column, t in enumerate(picked):
        axis = figure.add_subplot(grid[0, column])
        axis.imshow(blend(frames[t], saliency[t], lo, hi))
        axis.set_title(f"frame {t}", fontsize=8)
        axis.set_axis_off()
    curves = figure.add_subplot(grid[1, :])
    _plot_curves(curves, timeline, picked, segment)
    if title:
        figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def _plot_curves(axis: Any, timeline: dict[str, Any], picked: list[int], segment: tuple[int, int] | None) -> None:
    """Window probabilities at the windows' middles (left axis), the evidence curve as steps over its spans (right
    axis), the strip's frames as dotted lines."""
    windows = timeline["windows"]
    middles = [(w["start"] + w["end"] - 1) / 2 for w in windows]
    axis.plot(middles, [w["probability"] for w in windows], marker="o", markersize=3, color="tab:blue",
              label="window P(target)")
    axis.set_ylim(-0.02, 1.02)
    axis.set_ylabel("window P(target)", color="tab:blue")
    axis.set_xlabel("frame")
    axis.set_xlim(0, timeline["frames"])
    evidence = timeline["evidence"]
    edges = [first for first, _ in evidence["spans"]] + [evidence["spans"][-1][1]]
    right = axis.twinx()
    right.stairs(evidence["drops"], edges, color="tab:red", linewidth=1.5)
    right.axhline(0, color="tab:red", linewidth=0.5, alpha=0.4)
    right.set_ylabel(f"evidence: drop of video {timeline['score_kind']}", color="tab:red")
    for t in picked:
        axis.axvline(t + 0.5, color="grey", linestyle=":", linewidth=0.8)
    if segment is not None:
        axis.axvspan(*segment, color="tab:green", alpha=0.15, label="evidence segment")
    axis.legend(loc="upper left", fontsize=8)
