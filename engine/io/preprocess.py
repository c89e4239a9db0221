"""Turn decoded frames into model input: scale to cover the model size, centre-crop, normalize.

ClipGeometry records the resize and crop so boxes given in source pixels (a manifest's) map onto the map.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from aosa.engine.errors import VideoError
from aosa.engine.io.video import VideoInfo, decode_clip, probe_video, stream_decoder, stream_frames
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.preprocessing import Preprocessing

MIN_SIDE = 2  # pixels; a frame narrower than this has no image to resize
_EPS = 1e-9  # absorbs float noise before floor/ceil in box mapping


@dataclass(frozen=True)
class ClipGeometry:
    """Source (H,W) -> resized by `scale` (the source just covers `size`) -> crop at `offset` (top,left)."""

    source: tuple[int, int]
    scale: float
    offset: tuple[int, int]
    size: tuple[int, int]

    @classmethod
    def fit(cls, source: tuple[int, int], size: tuple[int, int]) -> ClipGeometry:
        """Smallest scale at which the source covers `size` (shorter side = size when square), crop centred."""
        scale = max(size[0] / source[0], size[1] / source[1])
        resized = _resized(source, scale, size)
        return cls(source=source, scale=scale, size=size,
                   offset=((resized[0] - size[0]) // 2, (resized[1] - size[1]) // 2))

    @property
    def resized(self) -> tuple[int, int]:
        """(H,W) of the frames after resizing, before the crop."""
        return _resized(self.source, self.scale, self.size)

    def map_box(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int] | None:
        """Map a box in source pixels (x1,y1 exclusive) to model-input pixels, rounded outwards and
        clipped to the frame; None if it is empty or lies wholly outside the crop."""
        if x1 <= x0 or y1 <= y0:
            return None
        top, left = self.offset
        height, width = self.size
        bx0 = max(math.floor(x0 * self.scale + _EPS) - left, 0)
        by0 = max(math.floor(y0 * self.scale + _EPS) - top, 0)
        bx1 = min(math.ceil(x1 * self.scale - _EPS) - left, width)
        by1 = min(math.ceil(y1 * self.scale - _EPS) - top, height)
        if bx1 <= bx0 or by1 <= by0:
            return None
        return bx0, by0, bx1, by1


def _resized(source: tuple[int, int], scale: float, size: tuple[int, int]) -> tuple[int, int]:
    """Source (H,W) times scale, rounded, never smaller than `size` (rounding must not undercut the crop)."""
    return max(round(source[0] * scale), size[0]), max(round(source[1] * scale), size[1])


@dataclass
class Clip:
    """One model-input clip: uint8 frames (T,h,w,3) for flow and display, the normalized (3,T,h,w) tensor
    (on the CPU), how it was cut from the source, the source's VideoInfo and the decoder that read it
    (e.g. "pyav 18.1.0 (FFmpeg 8.1.2)", "dali-cpu 2.4.0")."""

    frames: np.ndarray
    tensor: torch.Tensor
    geometry: ClipGeometry
    info: VideoInfo
    decoder: str = "unknown"


def resize_and_crop(frames: np.ndarray, size: tuple[int, int],
                    name: object = "frames") -> tuple[np.ndarray, ClipGeometry]:
    """Resize uint8 (T,H,W,3) frames to cover `size` (INTER_AREA shrinking, INTER_LINEAR enlarging) and
    centre-crop to it; `name` (e.g. the video path) labels a bad_resolution error."""
    if frames.ndim != 4 or frames.shape[3] != 3 or len(frames) == 0:
        raise ValueError(f"expected frames of shape (T,H,W,3) with T >= 1, got {frames.shape}")
    height, width = frames.shape[1:3]
    if min(height, width) < MIN_SIDE:
        raise VideoError(name, f"resolution {width}x{height} is too small: each side needs at least "
                         f"{MIN_SIDE} pixels", "bad_resolution")
    geometry = ClipGeometry.fit((height, width), (int(size[0]), int(size[1])))
    resized_h, resized_w = geometry.resized
    top, left = geometry.offset
    interpolation = cv2.INTER_AREA if geometry.scale < 1 else cv2.INTER_LINEAR
    out = np.stack([cv2.resize(frame, (resized_w, resized_h), interpolation=interpolation)
                    [top:top + geometry.size[0], left:left + geometry.size[1]] for frame in frames])
    return out, geometry


def normalize(frames: np.ndarray, mean: tuple[float, float, float],
              std: tuple[float, float, float]) -> torch.Tensor:
    """uint8 (T,H,W,3) -> float32 (3,T,H,W) = (x/255 - mean) / std, per RGB channel."""
    channels_first = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)
    tensor = channels_first.to(torch.float32, memory_format=torch.contiguous_format).div_(255)
    shape = (3, 1, 1, 1)
    return (tensor.sub_(torch.tensor(mean, dtype=torch.float32).view(shape))
            .div_(torch.tensor(std, dtype=torch.float32).view(shape)))


def load_clip(path: Path | str, prep: Preprocessing, start: int = 0, backend: str = "auto",
              device: str = "cpu") -> Clip:
    """Decode prep.frames frames from `start` and turn them into model input (DESIGN.md section 10)."""
    info = probe_video(path)
    decoded = decode_clip(info, start, prep.frames, backend, device)
    frames, geometry = resize_and_crop(decoded.frames, prep.size, name=info.path)
    return Clip(frames=frames, tensor=normalize(frames, prep.mean, prep.std), geometry=geometry, info=info,
                decoder=decoded.decoder)


def load_video(path: Path | str, prep: Preprocessing, start: int = 0, chunk: int = 64) -> Clip:
    """Every frame from `start` to the end as model input, decoded once as a stream (PyAV, or Pillow for a frame
    directory) and resized `chunk` frames at a time, so the source frames of a long video are never held whole."""
    info = probe_video(path)
    parts, size, geometry = [], None, None
    stream = stream_frames(info, start)
    while batch := list(itertools.islice(stream, chunk)):
        sizes = {frame.shape for frame in batch} | ({size} if size else set())
        if len(sizes) > 1:
            seen = " and ".join(f"{width}x{height}" for height, width, _ in sorted(sizes))
            raise VideoError(info.path, f"frames change size within the video ({seen})", "bad_resolution")
        size = batch[0].shape
        resized, geometry = resize_and_crop(np.stack(batch), prep.size, name=info.path)
        parts.append(resized)
    if geometry is None:
        raise VideoError(info.path, f"has no frames from frame {start} on", "too_few_frames")
    frames = np.concatenate(parts)
    return Clip(frames=frames, tensor=normalize(frames, prep.mean, prep.std), geometry=geometry, info=info,
                decoder=stream_decoder(info))


def model_boxes(row: ManifestRow, geometry: ClipGeometry, frames: int) -> list[tuple[int, int, int, int, int]]:
    """The row's boxes as (frame, x0, y0, x1, y1) in model-input pixels; boxes on frames outside
    [0, frames) or cut away by the centre crop are dropped. A box wholly outside the source frame is an
    annotation error (VideoError kind "bad_box")."""
    height, width = geometry.source
    mapped = []
    for frame, x0, y0, x1, y1 in row.boxes or ():
        if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
            raise VideoError(row.path, f"box {[frame, x0, y0, x1, y1]} lies outside the {width}x{height} frame",
                             "bad_box")
        box = geometry.map_box(x0, y0, x1, y1) if 0 <= frame < frames else None
        if box is not None:
            mapped.append((frame, *box))
    return mapped
