"""Pictures of a saliency map over its clip: a GIF animation and a PNG grid of frames (DESIGN.md section 10)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image

from aosa.engine.errors import ConfigError

COLORMAP = "jet"
ALPHA = 0.5
MIN_GIF_SIDE = 224


def _check(frames: np.ndarray, saliency: np.ndarray) -> None:
    """Frames must be uint8 (T,H,W,3) and the map (T,H,W) over the same voxels."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"frames must be uint8 (T,H,W,3), got {frames.dtype} {frames.shape}")
    if saliency.shape != frames.shape[:3]:
        raise ConfigError(f"saliency shape {saliency.shape} does not match frames {frames.shape[:3]}")


def _value_range(saliency: np.ndarray) -> tuple[float, float]:
    """Min and max over the whole volume, so every frame is coloured on the same scale."""
    return float(saliency.min()), float(saliency.max())


def _colours(saliency: np.ndarray) -> np.ndarray:
    """Float RGB (T,H,W,3) in 0..255 of the map under the colormap, normalized over the whole volume."""
    lo, hi = _value_range(saliency)
    scaled = (saliency - lo) / (hi - lo) if hi > lo else np.zeros(saliency.shape)
    return matplotlib.colormaps[COLORMAP](scaled)[..., :3] * 255.0


def colour_map(saliency: np.ndarray) -> np.ndarray:
    """A (T,H,W) map as uint8 (T,H,W,3) colours of the colormap, normalized over the whole volume."""
    return _colours(saliency.astype(np.float32)).round().astype(np.uint8)


def overlay(frames: np.ndarray, saliency: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """uint8 (T,H,W,3) frames blended with the map coloured by the colormap, normalized over the volume."""
    _check(frames, saliency)
    return ((1.0 - alpha) * frames + alpha * _colours(saliency)).round().astype(np.uint8)


def _upscale(images: np.ndarray, min_side: int) -> np.ndarray:
    """Enlarge (T,H,W,3) images by an integer factor (nearest) until the shorter side is at least min_side."""
    factor = math.ceil(min_side / min(images.shape[1:3]))
    if factor <= 1:
        return images
    return np.stack([cv2.resize(image, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
                     for image in images])


def save_overlay_animation(frames: np.ndarray, saliency: np.ndarray, path: Path, fps: float = 8.0) -> Path:
    """Write a looping GIF of the frames with the map over them; small frames are enlarged to be viewable."""
    images = _upscale(overlay(frames, saliency), MIN_GIF_SIDE)
    first, *rest = [Image.fromarray(image) for image in images]
    path.parent.mkdir(parents=True, exist_ok=True)
    first.save(path, format="GIF", save_all=True, append_images=rest,
               duration=round(1000.0 / fps), loop=0)
    return path


def save_frame_grid(frames: np.ndarray, saliency: np.ndarray, path: Path, title: str = "",
                    max_frames: int = 8) -> Path:
    """Write a PNG grid of up to max_frames evenly spaced overlaid frames with a colorbar of map values."""
    images = overlay(frames, saliency)
    picked = np.unique(np.linspace(0, len(images) - 1, min(len(images), max_frames)).round().astype(int))
    cols = min(len(picked), 4)
    rows = math.ceil(len(picked) / cols)
    figure = Figure(figsize=(2.6 * cols + 1.0, 2.6 * rows + 0.6), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, cols, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, t in zip(axes.flat, picked):
        ax.imshow(images[t])
        ax.set_title(f"frame {t}")
    lo, hi = _value_range(saliency)
    figure.colorbar(ScalarMappable(Normalize(lo, hi), COLORMAP), ax=axes, shrink=0.8, label="saliency")
    if title:
        figure.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    return path


def save_sanity_plot(curves: dict[str, list[tuple[str, float, float]]], path: Path, title: str = "") -> Path:
    """Line plot of Spearman correlation with the original map as layers are randomized from the logits down,
    (layer, mean, 95% half-width) per point, the interval shaded."""
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for method, points in curves.items():
        steps = np.arange(len(points) + 1)
        means = np.array([1.0] + [value for _, value, _ in points])
        halves = np.array([0.0] + [half for _, _, half in points])
        line, = axes.plot(steps, means, marker="o", label=method)
        axes.fill_between(steps, means - halves, means + halves, color=line.get_color(), alpha=0.15, linewidth=0)
    layers = next(iter(curves.values()), [])
    axes.set_xticks(range(len(layers) + 1), ["original"] + [name for name, *_ in layers], rotation=45, ha="right")
    axes.axhline(0.0, color="grey", linewidth=0.8)
    axes.set_ylim(-1.05, 1.05)
    axes.set_xlabel("layers re-initialized (cumulative, from the logits down)")
    axes.set_ylabel("Spearman rank correlation")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
