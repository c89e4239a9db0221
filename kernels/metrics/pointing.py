"""Spatial pointing game (S-PT, DESIGN.md 5): does each boxed frame's saliency peak fall within 7 px of the box?"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

Box = tuple[int, float, float, float, float]  # (frame, x0, y0, x1, y1), pixel edges, x1 and y1 exclusive


@dataclass(frozen=True)
class Pointing:
    """Hits over the frames that have a box."""

    hits: int
    frames: int

    @property
    def rate(self) -> float:
        return self.hits / self.frames if self.frames else math.nan


def box_pixels(box: Box, height: int, width: int) -> tuple[int, int, int, int] | None:
    """Inclusive pixel ranges (x_lo, y_lo, x_hi, y_hi) inside the box and the frame; None when there are none."""
    _, x0, y0, x1, y1 = box
    x_lo, y_lo = max(math.ceil(x0), 0), max(math.ceil(y0), 0)
    x_hi, y_hi = min(math.ceil(x1) - 1, width - 1), min(math.ceil(y1) - 1, height - 1)
    return (x_lo, y_lo, x_hi, y_hi) if x_lo <= x_hi and y_lo <= y_hi else None


def peak(frame: np.ndarray) -> tuple[int, int] | None:
    """(x, y) of the first maximum in raster order; None for a constant frame."""
    if frame.max() == frame.min():
        return None
    y, x = divmod(int(np.argmax(frame)), frame.shape[1])
    return x, y


def distance(point: tuple[int, int], pixels: tuple[int, int, int, int]) -> float:
    """Euclidean distance from a pixel to the nearest pixel of an inclusive pixel range."""
    (x, y), (x_lo, y_lo, x_hi, y_hi) = point, pixels
    return math.hypot(max(x_lo - x, 0, x - x_hi), max(y_lo - y, 0, y - y_hi))


def _boxes_by_frame(boxes: Sequence[Box], shape: tuple[int, ...]) -> dict[int, list[tuple[int, int, int, int]]]:
    """Each boxed frame of a (T, H, W) map with the pixel ranges of its boxes; boxes with no pixel inside the frame,
    or on a frame outside [0, T), are left out."""
    frames, height, width = shape
    per_frame: dict[int, list[tuple[int, int, int, int]]] = defaultdict(list)
    for box in boxes:
        pixels = box_pixels(box, height, width)
        if pixels is not None and 0 <= box[0] < frames:
            per_frame[int(box[0])].append(pixels)
    return per_frame


def _numpy(saliency: torch.Tensor | np.ndarray) -> np.ndarray:
    return saliency.detach().cpu().numpy() if isinstance(saliency, torch.Tensor) else np.asarray(saliency)


def pointing_game(saliency: torch.Tensor | np.ndarray, boxes: Sequence[Box], tolerance: float = 7.0) -> Pointing:
    """S-PT of a (T, H, W) map: a boxed frame hits when its peak is within `tolerance` px of any of its boxes.

    Boxes are in model-input pixels; boxes with no pixel inside the frame, or a frame outside [0, T), are ignored.
    """
    maps = _numpy(saliency)
    per_frame = _boxes_by_frame(boxes, maps.shape)
    hits = 0
    for index, frame_boxes in per_frame.items():
        point = peak(maps[index])
        hits += point is not None and any(distance(point, pixels) <= tolerance for pixels in frame_boxes)
    return Pointing(hits, len(per_frame))


def box_energy(saliency: torch.Tensor | np.ndarray, boxes: Sequence[Box]) -> float:
    """Share of a (T, H, W) map's positive mass that lies inside the boxes, over the frames that have one (the
    energy-based pointing game of Score-CAM); NaN when those frames hold no positive mass."""
    maps = _numpy(saliency)
    positive = np.clip(maps.astype(np.float64), 0, None)
    per_frame = _boxes_by_frame(boxes, maps.shape)
    inside = np.zeros(maps.shape, dtype=bool)
    for frame, frame_boxes in per_frame.items():
        for x_lo, y_lo, x_hi, y_hi in frame_boxes:
            inside[frame, y_lo:y_hi + 1, x_lo:x_hi + 1] = True
    total = positive[list(per_frame)].sum()
    return float(positive[inside].sum() / total) if total > 0 else math.nan


def dataset_pointing(per_video: Sequence[tuple[Hashable, Pointing]]) -> tuple[float, float]:
    """(total hits / total frames, mean over classes of each class's hits / frames); classes without frames skipped."""
    by_class: dict[Hashable, list[int]] = defaultdict(lambda: [0, 0])
    for label, result in per_video:
        by_class[label][0] += result.hits
        by_class[label][1] += result.frames
    total = Pointing(sum(h for h, _ in by_class.values()), sum(f for _, f in by_class.values()))
    rates = [Pointing(h, f).rate for h, f in by_class.values() if f]
    return total.rate, float(np.mean(rates)) if rates else math.nan
