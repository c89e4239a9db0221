"""Model-input geometry (cover-resize + centre crop, box mapping), normalization and load_clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aosa.engine.errors import VideoError
from aosa.engine.io.preprocess import ClipGeometry, load_clip, normalize, resize_and_crop
from aosa.schemas.preprocessing import Preprocessing
from tests.videos import moving_square, square_left, write_video


def test_geometry_of_landscape_source_by_hand() -> None:
    # 320x240 -> shorter side 240 becomes 112: scale 112/240; width 320*112/240 = 149.33 -> 149;
    # crop left (149 - 112) // 2 = 18, top 0.
    geometry = ClipGeometry.fit((240, 320), (112, 112))
    assert geometry.scale == pytest.approx(112 / 240)
    assert geometry.resized == (112, 149)
    assert geometry.offset == (0, 18)


def test_geometry_of_portrait_and_non_square_targets() -> None:
    assert ClipGeometry.fit((320, 240), (112, 112)).offset == (18, 0)
    # Target 128x171 from 240x320: width needs 171/320 = 0.534375 > 128/240, so width binds.
    geometry = ClipGeometry.fit((240, 320), (128, 171))
    assert geometry.scale == pytest.approx(171 / 320)
    assert geometry.resized == (128, 171) and geometry.offset == (0, 0)


@pytest.mark.parametrize(("box", "expected"), [
    # x: 100*0.4667 = 46.67 -> 46 - 18 = 28; 200*0.4667 = 93.33 -> 94 - 18 = 76; y: 60 -> 28, 180 -> 84.
    ((100, 60, 200, 180), (28, 28, 76, 84)),
    ((250, -10, 400, 300), (98, 0, 112, 112)),  # 250 -> 116.67 -> 116 - 18 = 98; the rest is clipped
    ((0, 0, 30, 240), None),  # x < 14 after resizing: inside the cropped-away left margin
    ((330, 10, 400, 20), None),  # right of the source
    ((50, 50, 50, 80), None),  # empty
])
def test_map_box_by_hand(box: tuple[int, int, int, int], expected: tuple[int, int, int, int] | None) -> None:
    assert ClipGeometry.fit((240, 320), (112, 112)).map_box(*box) == expected


@pytest.mark.parametrize(("source", "size"), [
    ((240, 320), (112, 112)), ((320, 240), (112, 112)), ((9, 17), (112, 112)), ((17, 9), (112, 112)),
    ((2, 2), (8, 8)), ((101, 37), (64, 48)), ((240, 320), (128, 171)), ((112, 112), (112, 112))])
def test_resize_and_crop_shapes(source: tuple[int, int], size: tuple[int, int]) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (3, *source, 3), dtype=np.uint8)
    out, geometry = resize_and_crop(frames, size)
    assert out.shape == (3, *size, 3) and out.dtype == np.uint8
    assert geometry.source == source and geometry.size == size
    if source == size:
        assert np.array_equal(out, frames)


def test_mapped_box_covers_the_resized_content() -> None:
    frames = np.zeros((1, 240, 320, 3), np.uint8)
    frames[0, 60:180, 100:200] = 255
    out, geometry = resize_and_crop(frames, (112, 112))
    x0, y0, x1, y1 = geometry.map_box(100, 60, 200, 180)
    ys, xs = np.nonzero(out[0, :, :, 0] > 0)
    assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


def test_one_pixel_wide_frames_are_a_bad_resolution() -> None:
    with pytest.raises(VideoError) as caught:
        resize_and_crop(np.zeros((2, 16, 1, 3), np.uint8), (112, 112), name="thin.mp4")
    assert caught.value.kind == "bad_resolution"
    assert str(caught.value).startswith("thin.mp4: resolution 1x16 is too small")


def test_normalize_layout_and_values() -> None:
    frames = np.zeros((2, 4, 5, 3), np.uint8)
    frames[1, 2, 3] = (255, 51, 0)
    mean, std = (0.5, 0.2, 0.1), (0.25, 0.5, 2.0)
    tensor = normalize(frames, mean, std)
    assert tensor.shape == (3, 2, 4, 5) and tensor.dtype == torch.float32 and tensor.is_contiguous()
    expected = [(1.0 - 0.5) / 0.25, (0.2 - 0.2) / 0.5, (0.0 - 0.1) / 2.0]
    assert tensor[:, 1, 2, 3].tolist() == pytest.approx(expected)
    assert tensor[:, 0, 0, 0].tolist() == pytest.approx([-2.0, -0.4, -0.05])


def test_load_clip(tmp_path: Path) -> None:
    path = write_video(tmp_path / "square.webm", moving_square(12, height=96, width=128, side=32, step=4),
                       "libvpx-vp9")
    prep = Preprocessing(frames=4, size=(48, 48))
    clip = load_clip(path, prep, start=6)
    assert clip.frames.shape == (4, 48, 48, 3) and clip.tensor.shape == (3, 4, 48, 48)
    assert clip.info.codec == "vp9" and clip.info.path == path
    assert clip.geometry == ClipGeometry.fit((96, 128), (48, 48))
    # Scale 0.5, crop left 8: square left edges 24, 28, 32, 36 in source pixels -> 4, 6, 8, 10.
    assert [square_left(frame) for frame in clip.frames] == [4, 6, 8, 10]
    assert torch.allclose(clip.tensor, normalize(clip.frames, prep.mean, prep.std))


def test_load_clip_names_the_file_for_a_bad_resolution(tmp_path: Path) -> None:
    path = write_video(tmp_path / "thin.mov", np.zeros((4, 16, 1, 3), np.uint8), "png")
    with pytest.raises(VideoError) as caught:
        load_clip(path, Preprocessing(frames=4))
    assert caught.value.kind == "bad_resolution" and str(path) in str(caught.value)
