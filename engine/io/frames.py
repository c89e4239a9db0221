"""A directory of JPEG frames as a video, in the 3D-ResNets-PyTorch layout (`image_00001.jpg`, ...).

Frames are read in numeric order with Pillow (libjpeg-turbo), whichever decode backend was asked for, so a
frame directory gives the same RGB frames everywhere. Every fault is a VideoError naming the directory or
the frame file.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

from aosa.engine.errors import VideoError

CODEC = "jpeg-frames"
_NAME = re.compile(r"image_(\d+)\.jpe?g", re.IGNORECASE)


def decoder_name() -> str:
    """Provenance of frames read from a frame directory."""
    return f"jpeg-frames (Pillow {PIL.__version__})"


def frame_files(folder: Path) -> list[Path]:
    """The directory's `image_NNNNN.jpg` files in order; empty or gapped numbering is a VideoError."""
    numbered = sorted((int(match.group(1)), child) for child in folder.iterdir()
                      if (match := _NAME.fullmatch(child.name)) and child.is_file())
    if not numbered:
        raise VideoError(folder, "frame directory has no image_NNNNN.jpg frames", "empty_file")
    for expected, (number, child) in enumerate(numbered, start=numbered[0][0]):
        if number != expected:
            missing = f"image_{expected:05d}.jpg"
            raise VideoError(folder, f"frame numbering has a gap: {missing} is missing before {child.name}",
                             "decode_error")
    return [child for _, child in numbered]


def frame_size(first: Path) -> tuple[int, int]:
    """(width, height) from the first frame's header, without decoding it."""
    try:
        with Image.open(first) as image:
            return image.size
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoError(first, f"frame is not a readable JPEG ({exc})", "decode_error") from None


def read_frame(path: Path) -> np.ndarray:
    """One frame file as uint8 (H,W,3) RGB; a truncated or corrupt file is a VideoError naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise VideoError(path, f"frame is corrupt or unreadable ({exc})", "decode_error") from None


def read_frames(folder: Path, files: list[Path], start: int, count: int) -> np.ndarray:
    """Frames start..start+count-1 as uint8 (count,H,W,3); all must share the first one's size."""
    if start + count > len(files):
        raise VideoError(folder, f"has {len(files)} frames but the clip needs {start + count} "
                         f"(start {start} + {count} frames)", "too_few_frames")
    frames = [read_frame(path) for path in files[start:start + count]]
    for path, frame in zip(files[start:start + count], frames):
        if frame.shape != frames[0].shape:
            raise VideoError(folder, f"frames have mixed sizes: {path.name} is {frame.shape[1]}x{frame.shape[0]}, "
                             f"{files[start].name} is {frames[0].shape[1]}x{frames[0].shape[0]}", "bad_resolution")
    return np.stack(frames)
