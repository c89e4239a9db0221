"""The synthetic probe benchmark: boxes are the drawn target, motion (or, in the appearance task, the moving
object's look) tells the class, files are reproducible."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.datasets.sprites import Sprite
from aosa.engine.datasets.synthetic import (DIRECTIONS, TASKS, VARIANTS, Scene, draw, make_scene, render_clip,
                                       through_yuv420, write_benchmark)
from aosa.engine.errors import ConfigError
from aosa.engine.io.preprocess import load_clip
from aosa.engine.io.video import decode_frames
from aosa.engine.models.zoo import PROBE_CLASSES, PROBE_PREPROCESSING, PROBE_TASKS
from aosa.jobs.synth import main

MARK = np.array([255, 0, 255], dtype=np.uint8)  # never drawn by the generator (it keeps off 0 and 255)
CASES = [(label, variant, seed) for variant in VARIANTS for label in range(4) for seed in range(3)]
TASK_CASES = [(task, *case) for task in TASKS for case in CASES]


def scene(label: int, variant: str, seed: int, task: str = "motion") -> Scene:
    return make_scene(np.random.default_rng([seed, label]), label, variant=variant, task=task)


def marked_target(scene: Scene) -> Scene:
    """The scene with its target painted MARK and nothing in front of it."""
    sprite = scene.target.sprite
    painted = Sprite(np.broadcast_to(MARK, sprite.pixels.shape), sprite.mask)
    return dataclasses.replace(scene, target=dataclasses.replace(scene.target, sprite=painted), front=())


def drawn_boxes(frames: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Per frame the bounding box (x0, y0, x1, y1), exclusive, of the MARK pixels."""
    boxes = []
    for frame in frames:
        rows, cols = np.nonzero(np.all(frame == MARK, axis=-1))
        boxes.append((int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1))
    return boxes


def shift(scene: Scene) -> np.ndarray:
    """(T,2) how far the picture has panned by each frame (zero unless the variant is "pan")."""
    return scene.camera[0] - scene.camera


def test_classes_match_the_probe_models() -> None:
    assert tuple(DIRECTIONS) == PROBE_CLASSES == TASKS["motion"].classes
    assert {task: family.classes for task, family in TASKS.items()} == PROBE_TASKS


@pytest.mark.parametrize(("task", "label", "variant", "seed"), TASK_CASES)
def test_boxes_are_exactly_the_drawn_target_and_stay_inside(task: str, label: int, variant: str, seed: int) -> None:
    clip = scene(label, variant, seed, task)
    boxes = clip.target.boxes()
    assert drawn_boxes(draw(marked_target(clip))) == boxes
    assert all(0 <= x0 < x1 <= 112 and 0 <= y0 < y1 <= 112 for x0, y0, x1, y1 in boxes)
    assert all(14 <= x1 - x0 <= 20 and y1 - y0 == x1 - x0 for x0, y0, x1, y1 in boxes)


@pytest.mark.parametrize(("label", "variant", "seed"), CASES)
def test_target_moves_in_the_class_direction_at_two_to_four_pixels(label: int, variant: str, seed: int) -> None:
    clip = scene(label, variant, seed)
    steps = np.diff(clip.target.corners - shift(clip), axis=0)
    direction = np.array(list(DIRECTIONS.values())[label])
    along = steps @ direction
    assert np.all((along >= 2) & (along <= 4))
    assert np.array_equal(steps, along[:, None] * direction)


@pytest.mark.parametrize(("task", "label", "variant", "seed"), TASK_CASES)
def test_distractors_stay_home_within_one_pixel(task: str, label: int, variant: str, seed: int) -> None:
    clip = scene(label, variant, seed, task)
    distractors = clip.behind + clip.front
    assert 2 <= len(distractors) <= 4
    for track in distractors:
        assert np.ptp(track.corners - shift(clip), axis=0).max() <= 2
        assert 14 <= track.sprite.mask.shape[0] <= 20


@pytest.mark.parametrize("seed", range(4))
def test_pan_shifts_the_whole_picture_one_pixel_per_frame(seed: int) -> None:
    clip = scene(0, "pan", seed)
    step = np.diff(shift(clip), axis=0)
    assert np.all(step == step[0]) and np.abs(step[0]).sum() == 1
    hidden = Sprite(clip.target.sprite.pixels, np.zeros_like(clip.target.sprite.mask))
    target = dataclasses.replace(clip.target, sprite=hidden)
    frames = draw(dataclasses.replace(clip, behind=(), front=(), target=target))
    dx, dy = step[0]
    assert np.array_equal(np.roll(frames[0], (dy, dx), axis=(0, 1))[8:-8, 8:-8], frames[1][8:-8, 8:-8])


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("seed", range(4))
def test_occluder_hides_part_of_the_target_but_the_box_is_its_full_extent(seed: int, task: str) -> None:
    clip = scene(1, "occluded", seed, task)
    assert len(clip.front) == 1
    full = draw(marked_target(clip))
    painted = dataclasses.replace(marked_target(clip), front=clip.front)
    visible = np.all(draw(painted) == MARK, axis=-1).sum(axis=(1, 2))
    assert np.any(visible < np.all(full == MARK, axis=-1).sum(axis=(1, 2)))
    assert drawn_boxes(full) == clip.target.boxes()


@pytest.mark.parametrize("task", TASKS)
def test_render_clip_is_deterministic_for_a_seed(task: str) -> None:
    first, boxes = render_clip(np.random.default_rng(5), 3, variant="pan", task=task)
    again, boxes_again = render_clip(np.random.default_rng(5), 3, variant="pan", task=task)
    other, _ = render_clip(np.random.default_rng(6), 3, variant="pan", task=task)
    assert first.shape == (16, 112, 112, 3) and first.dtype == np.uint8
    assert np.array_equal(first, again) and boxes == boxes_again and not np.array_equal(first, other)


@pytest.mark.parametrize(("options", "problem"), [
    ({"label": 4}, "label"), ({"variant": "zoom"}, "variant"), ({"size": 40}, "size"), ({"frames": 1}, "frames"),
    ({"task": "colour"}, "task")])
def test_bad_options_are_config_errors(options: dict, problem: str) -> None:
    arguments = {"label": 0, "variant": "plain", "size": 112, "frames": 16} | options
    with pytest.raises(ConfigError, match=problem):
        render_clip(np.random.default_rng(0), **arguments)


def test_write_benchmark_is_reproducible_balanced_and_decodes(tmp_path) -> None:
    manifest = write_benchmark(tmp_path / "a", videos=8, seed=3)
    again = write_benchmark(tmp_path / "b", videos=8, seed=3)
    other = write_benchmark(tmp_path / "c", videos=8, seed=4)
    assert manifest.read_bytes() == again.read_bytes() != other.read_bytes()
    rows = read_manifest(manifest)
    assert [row.label for row in rows] == [0, 1, 2, 3] * 2
    assert all(row.path.suffix == ".mp4" and len(row.boxes) == 16 for row in rows)
    assert [box[0] for box in rows[0].boxes] == list(range(16))
    clip = load_clip(rows[0].path, PROBE_PREPROCESSING)
    assert clip.tensor.shape == (3, 16, 112, 112)
    assert np.array_equal(clip.frames, load_clip(read_manifest(again)[0].path, PROBE_PREPROCESSING).frames)
    rendered, _ = render_clip(np.random.default_rng([3, 0]), 0)
    # near-lossless H.264: about one grey level on average since decoding converts with DALI's swscale flags
    # (engine.io.colour), whose chroma upsampling rounds differently from the in-memory round trip at edges
    assert np.abs(clip.frames.astype(int) - through_yuv420(rendered)).mean() < 1.5


def test_vp9_benchmark_decodes_with_dali(tmp_path) -> None:
    row = read_manifest(write_benchmark(tmp_path, videos=1, seed=0, codec="libvpx-vp9", variant="occluded"))[0]
    assert row.path.suffix == ".webm"
    dali = load_clip(row.path, PROBE_PREPROCESSING, backend="dali")
    assert dali.tensor.shape == (3, 16, 112, 112)
    assert np.abs(dali.frames.astype(int) - decode_frames(row.path, 0, 16, backend="pyav")).mean() < 3


def test_cli_writes_n_videos(tmp_path, capsys) -> None:
    assert main(["--out", str(tmp_path), "--videos", "5", "--codec", "vp9", "--variant", "pan", "--seed", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [f"pan-2-{i:05d}.webm" for i in range(5)]
    assert len(read_manifest(tmp_path / "manifest.csv")) == 5
    assert "wrote 5" in capsys.readouterr().out


def test_cli_bad_option_exits_2(tmp_path, capsys) -> None:
    assert main(["--out", str(tmp_path), "--videos", "0"]) == 2
    assert "aosa synth: error: need videos >= 1" in capsys.readouterr().err


def test_frame_directory_benchmark_decodes_without_pyav(tmp_path) -> None:
    """`--codec frames` writes JPEG frame directories that the engine reads with PyAV unimportable (a GPU image
    without FFmpeg): the frames are the drawn clip within JPEG's error."""
    assert main(["--out", str(tmp_path), "--videos", "2", "--codec", "frames", "--seed", "4"]) == 0
    row = read_manifest(tmp_path / "manifest.csv")[1]
    drawn, _ = render_clip(np.random.default_rng([4, 1]), row.label)
    probe = ("import sys; sys.modules['av'] = None; import numpy as np; "  # any `import av` now fails
             "from aosa.engine.io.video import decode_frames; "
             f"frames = decode_frames({str(row.path)!r}, 0, 16); np.save({str(tmp_path / 'f.npy')!r}, frames)")
    subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True)
    frames = np.load(tmp_path / "f.npy")
    assert frames.shape == drawn.shape and np.abs(frames.astype(int) - drawn).mean() < 3


def test_colour_conversion_flags_are_pyavs_bilinear_full_chroma_accurate_rounding() -> None:
    from av.video.reformatter import Interpolation

    from aosa.engine.io.colour import SWS_FLAGS
    assert SWS_FLAGS == (Interpolation.BILINEAR.value | Interpolation.FULL_CHR_H_INT.value
                         | Interpolation.ACCURATE_RND.value)
