"""The images the pages load: a clip's frames and a map's colours as strips of frames left to right (the player
draws frame t from column t), and a gallery thumbnail: the middle frame with the map over it."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from aosa.engine.reporting.visualize import colour_map, overlay
from aosa.engine.store.previews import strip

THUMB_QUALITY = 85


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def frames_strip(frames: np.ndarray) -> bytes:
    """uint8 (T,H,W,3) frames as one PNG, left to right."""
    return png(strip(frames))


def map_strip(saliency: np.ndarray) -> bytes:
    """A (T,H,W) map in the overlays' colours (scaled to its own range) as one PNG, left to right."""
    return png(strip(colour_map(saliency)))


def thumbnail(frames: np.ndarray | None, saliency: np.ndarray) -> bytes:
    """The map over the middle frame (the map alone where there are no frames), as a JPEG."""
    middle = len(saliency) // 2
    image = overlay(frames, saliency)[middle] if frames is not None else colour_map(saliency)[middle]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=THUMB_QUALITY)
    return buffer.getvalue()
