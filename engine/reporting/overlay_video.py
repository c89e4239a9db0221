"""A whole video's stitched map over the video itself: an H.264 MP4 at the source's own resolution and frame rate.

The map lives on the model's crop of the resized frame (engine.io.preprocess.ClipGeometry); it is put back where
that crop came from and resized to the source, and only the pixels the model saw are coloured. Colours span the
whole video's map, so a frame without evidence stays at the cold end. The source is read again as a stream, frame by
frame, so a long video is never held whole.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import cv2
import matplotlib
import numpy as np

from aosa.engine.io.preprocess import ClipGeometry
from aosa.engine.io.video import VideoInfo, stream_frames
from aosa.engine.reporting.visualize import ALPHA, COLORMAP

DEFAULT_FPS = 25  # frame directories carry no rate; UCF101's frames were extracted at 25 fps
ENCODER = ("libx264", {"crf": "20", "preset": "veryfast"})


def source_overlay(frame: np.ndarray, values: np.ndarray, geometry: ClipGeometry, lo: float, hi: float) -> np.ndarray:
    """One uint8 (H,W,3) source frame with a model-resolution (h,w) map blended over the part the model saw."""
    resized_h, resized_w = geometry.resized
    top, left = geometry.offset
    height, width = geometry.size
    placed, seen = np.zeros((resized_h, resized_w), np.float32), np.zeros((resized_h, resized_w), np.float32)
    placed[top:top + height, left:left + width] = values
    seen[top:top + height, left:left + width] = 1.0
    size = (frame.shape[1], frame.shape[0])
    placed, seen = (cv2.resize(plane, size, interpolation=cv2.INTER_LINEAR) for plane in (placed, seen))
    return blend(frame, placed, lo, hi, ALPHA * seen[..., None])


def blend(image: np.ndarray, values: np.ndarray, lo: float, hi: float,
          alpha: float | np.ndarray = ALPHA) -> np.ndarray:
    """uint8 (..., H, W, 3) images with (..., H, W) map values coloured over them, `lo` to `hi` spanning the
    colormap (the whole video's range, so frames compare), `alpha` the colour's weight (per pixel if an array)."""
    scaled = np.clip((values - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros(values.shape)
    colours = matplotlib.colormaps[COLORMAP](scaled)[..., :3] * 255.0
    return ((1.0 - alpha) * image + alpha * colours).round().astype(np.uint8)


def frame_rate(info: VideoInfo) -> Fraction:
    """The source's frame rate as a fraction (29.97 -> 30000/1001), DEFAULT_FPS when it has none."""
    return Fraction(info.fps).limit_denominator(1001) if info.fps else Fraction(DEFAULT_FPS)


def save_overlay_video(info: VideoInfo, start: int, geometry: ClipGeometry, saliency: np.ndarray, path: Path) -> Path:
    """Write the frames of `info` from `start` with the (T, h, w) stitched map over them to an MP4 at `path`. H.264
    in 4:2:0 needs even sides: an odd source gains one edge row or column."""
    import av  # PyAV only where a video is written

    lo, hi = float(saliency.min()), float(saliency.max())
    frames = stream_frames(info, start)
    first = next(frames)
    odd = (first.shape[0] % 2, first.shape[1] % 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(ENCODER[0], rate=frame_rate(info), options=ENCODER[1])
        stream.height, stream.width = first.shape[0] + odd[0], first.shape[1] + odd[1]
        stream.pix_fmt = "yuv420p"
        for values, frame in zip(saliency, itertools.chain([first], frames)):
            image = np.pad(source_overlay(frame, values, geometry, lo, hi), ((0, odd[0]), (0, odd[1]), (0, 0)),
                           mode="edge")
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path
