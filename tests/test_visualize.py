"""Saliency pictures: the GIF has one frame per clip frame, the PNG grid is a real, non-blank image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from aosa.engine.errors import ConfigError
from aosa.engine.reporting.visualize import overlay, save_frame_grid, save_overlay_animation

T, H, W = 6, 112, 112


@pytest.fixture
def clip() -> np.ndarray:
    """A grey gradient clip, identical in every frame, so only the map makes frames differ."""
    ramp = np.linspace(40, 200, W, dtype=np.float32)
    return np.broadcast_to(ramp[None, None, :, None], (T, H, W, 3)).astype(np.uint8)


@pytest.fixture
def peaked() -> np.ndarray:
    """Zero everywhere except a bright blob in frame 2."""
    saliency = np.zeros((T, H, W), np.float32)
    saliency[2, 40:70, 30:60] = 1.0
    return saliency


def test_overlay_is_normalized_over_the_volume(clip: np.ndarray, peaked: np.ndarray) -> None:
    images = overlay(clip, peaked)
    assert images.shape == clip.shape and images.dtype == np.uint8
    assert np.array_equal(images[0], images[1])          # flat frames are coloured alike
    assert not np.array_equal(images[1], images[2])      # the peak shows


def test_gif_has_one_frame_per_clip_frame(tmp_path: Path, clip: np.ndarray, peaked: np.ndarray) -> None:
    clip = clip.copy()
    clip[:, :4, :4] = np.arange(T, dtype=np.uint8)[:, None, None, None] * 40  # keep frames distinct
    path = save_overlay_animation(clip, peaked, tmp_path / "out" / "overlay.gif", fps=5)
    with Image.open(path) as gif:
        assert gif.format == "GIF" and gif.size == (224, 224)
        frames = [np.asarray(frame.convert("RGB"), dtype=np.int16) for frame in ImageSequence.Iterator(gif)]
    assert len(frames) == T
    change = np.abs(frames[2] - frames[1]).mean(axis=-1)
    assert change[2 * 40: 2 * 70, 2 * 30: 2 * 60].mean() > 30.0   # the peak, upscaled x2, is coloured
    assert change[2 * 80:, 2 * 80:].mean() < 5.0                   # away from it frames look the same


def test_png_grid_is_a_real_image(tmp_path: Path, clip: np.ndarray, peaked: np.ndarray) -> None:
    path = save_frame_grid(clip, peaked, tmp_path / "grid.png", title="aosa: class 3 (p=0.91)", max_frames=4)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as png:
        width, height = png.size
        pixels = np.asarray(png.convert("RGB"))
    assert 400 < width < 2000 and 200 < height < 1500
    assert pixels.std() > 0


def test_constant_map_does_not_crash(tmp_path: Path, clip: np.ndarray) -> None:
    constant = np.full((T, H, W), 0.3, np.float32)
    images = overlay(clip, constant)
    assert np.array_equal(images, overlay(clip, np.zeros((T, H, W), np.float32)))
    save_overlay_animation(clip, constant, tmp_path / "c.gif")
    save_frame_grid(clip, constant, tmp_path / "c.png")


def test_mismatched_shapes_raise(clip: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="does not match"):
        overlay(clip, np.zeros((T, H, W + 1), np.float32))
