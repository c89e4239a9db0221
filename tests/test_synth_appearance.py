"""The appearance task of the synthetic benchmark: the moving object's look is the class, the still ones show
other looks, and neither a pixel's colour nor an object's mean colour gives the class away."""

from __future__ import annotations

import numpy as np
import pytest

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.datasets.sprites import CELL, LOOKS, Sprite, patterned_sprite
from aosa.engine.datasets.synthetic import VARIANTS, Scene, make_scene, write_benchmark
from aosa.jobs.synth import main

CASES = [(label, variant, seed) for variant in VARIANTS for label in range(4) for seed in range(3)]


def scene(label: int, variant: str, seed: int) -> Scene:
    return make_scene(np.random.default_rng([seed, label]), label, variant=variant, task="appearance")


def look_of(sprite: Sprite) -> str:
    """The look whose mask a sprite has and whose two tones its brightness splits into."""
    grey = sprite.pixels.astype(int).sum(axis=-1)
    for look, pattern in LOOKS.items():
        for cell in range(CELL[0], CELL[1] + 1):
            mask, second = pattern(sprite.mask.shape[0], cell)
            if np.array_equal(mask, sprite.mask) and grey[second & mask].min() > grey[~second & mask].max():
                return look
            if np.array_equal(mask, sprite.mask) and grey[second & mask].max() < grey[~second & mask].min():
                return look
    raise AssertionError("sprite matches no look")


@pytest.mark.parametrize(("label", "variant", "seed"), CASES)
def test_the_mover_shows_the_class_and_the_others_other_looks(label: int, variant: str, seed: int) -> None:
    clip = scene(label, variant, seed)
    looks = list(LOOKS)
    assert look_of(clip.target.sprite) == looks[label]
    assert all(look_of(track.sprite) != looks[label] for track in clip.behind + clip.front)


@pytest.mark.parametrize(("label", "variant", "seed"), CASES)
def test_the_mover_goes_straight_at_two_to_four_pixels_per_frame(label: int, variant: str, seed: int) -> None:
    clip = scene(label, variant, seed)
    path = clip.target.corners - (clip.camera[0] - clip.camera)  # without the pan
    speed = np.linalg.norm(path[-1] - path[0]) / (len(path) - 1)
    assert 2 - 0.05 <= speed <= 4 + 0.05
    steps = np.diff(path, axis=0)
    assert np.abs(steps - (path[-1] - path[0]) / (len(path) - 1)).max() <= 1  # whole-pixel rounding only


def test_directions_vary_across_clips() -> None:
    moves = [scene(0, "plain", seed).target.corners[[0, -1]] for seed in range(40)]
    octants = {round(np.arctan2(y1 - y0, x1 - x0) / (np.pi / 4)) % 8 for (x0, y0), (x1, y1) in moves}
    assert len(octants) >= 6


def test_no_colour_tells_the_looks_apart() -> None:
    palette = np.array([0.5, 0.4, 0.6])
    stats = {}
    for index, look in enumerate(LOOKS):
        rng = np.random.default_rng([7, index])
        pixels = np.concatenate([(s := patterned_sprite(rng, palette, look)).pixels[s.mask] for _ in range(300)])
        stats[look] = pixels.mean(axis=0), pixels.std(axis=0)
    means, spreads = (np.array([value[part] for value in stats.values()]) for part in (0, 1))
    assert np.ptp(means, axis=0).max() < 3  # grey levels: every look averages to the same colour
    assert np.ptp(spreads, axis=0).max() < 3  # and spreads its pixels alike


def test_write_benchmark_is_reproducible_and_labels_cycle(tmp_path) -> None:
    manifest = write_benchmark(tmp_path / "a", videos=4, seed=3, task="appearance")
    again = write_benchmark(tmp_path / "b", videos=4, seed=3, task="appearance")
    motion = write_benchmark(tmp_path / "c", videos=4, seed=3)
    assert manifest.read_bytes() == again.read_bytes() != motion.read_bytes()
    rows = read_manifest(manifest)
    assert [row.label for row in rows] == [0, 1, 2, 3] and all(len(row.boxes) == 16 for row in rows)
    assert [path.read_bytes() for path in sorted((tmp_path / "a" / "videos").iterdir())] == \
        [path.read_bytes() for path in sorted((tmp_path / "b" / "videos").iterdir())]


def test_cli_writes_appearance_videos(tmp_path, capsys) -> None:
    assert main(["--out", str(tmp_path), "--videos", "2", "--task", "appearance", "--variant", "occluded"]) == 0
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        f"appearance-occluded-0-{i:05d}.mp4" for i in range(2)]
    assert [row.label for row in read_manifest(tmp_path / "manifest.csv")] == [0, 1]
    assert "wrote 2 appearance occluded" in capsys.readouterr().out


def test_cli_rejects_an_unknown_task(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--videos", "1", "--task", "colour"])
    assert "invalid choice: 'colour'" in capsys.readouterr().err
