"""Long synthetic videos whose class evidence lies in a known segment of frames: ground truth for *when*.

A video of 64-256 frames (any length of at least LONGEST_SEGMENT + 16) holds the clip benchmark's scene (textured
background, one target, 2-4 distractors that stay or jitter) and a segment [first, end) of SEGMENT frames:
* motion: the target moves 2-4 px/frame in its class's direction inside the segment only; before it, it stands
  where the motion will start and after it where the motion ended, in both cases still or jittering by +-1 px;
* appearance: the target moves back and forth (15 frames each way, 2-4 px/frame, a random direction) through the
  whole video, showing its class's look inside the segment only and outside it a neutral look: a flat square of
  the look's mean colour (the looks' two tones average to it), so its colour does not tell the segment either.
Every frame has the target's box. A segment is at most 23 frames so that the fastest, largest motion target (4
px/frame, 20 px, jittering +-1 px outside the segment) stays inside a 112 px frame.

    frames, boxes, segment = render_long(np.random.default_rng(0), label=1, frames=128, task="appearance")
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from aosa.engine.datasets.sprites import SIDE, Sprite
from aosa.engine.datasets.synthetic import (DISTRACTORS, SPEED, TASKS, Scene, Track, draw, jitter, object_palette,
                                            place_distractors, placed_corners, textured_background, write_videos)
from aosa.engine.errors import ConfigError

SEGMENT = (16, 23)  # frames, inclusive
BACK_AND_FORTH = 15  # appearance: frames of motion each way, a 16-frame clip's run
LONG_FRAMES = (64, 256)  # the default range of `aosa synth --long`


def check_long(frames: int, size: int, task: str) -> None:
    """Reject a length, frame size or task the long generator cannot draw."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if frames < SEGMENT[1] + 16:
        raise ConfigError(f"a long video needs at least {SEGMENT[1] + 16} frames (a {SEGMENT[1]}-frame segment and "
                          f"a clip beside it), got {frames}")
    reach = SIDE[1] + SPEED[1] * max(SEGMENT[1] - 1, BACK_AND_FORTH) + 2  # + the jitter's two pixels
    if size < reach:
        raise ConfigError(f"a {size}px frame cannot hold a segment's target motion; need size >= {reach:g}")


def _steps(task: str, frames: int, segment: tuple[int, int]) -> np.ndarray:
    """(T,) frames of motion the target has made by frame t: only inside the segment (motion), or back and forth
    throughout (appearance)."""
    t = np.arange(frames)
    if task == "motion":
        return np.clip(t - segment[0], 0, segment[1] - segment[0] - 1)
    period = 2 * BACK_AND_FORTH
    return BACK_AND_FORTH - np.abs(t % period - BACK_AND_FORTH)


def _neutral(sprite: Sprite) -> Sprite:
    """A flat square of the sprite's side in its mean colour."""
    colour = sprite.pixels[sprite.mask].mean(axis=0).round().astype(np.uint8)
    side = sprite.mask.shape[0]
    return Sprite(np.broadcast_to(colour, (side, side, 3)).copy(), np.ones((side, side), dtype=bool))


def render_long(rng: np.random.Generator, label: int, frames: int, size: int = 112,
                task: str = "motion") -> tuple[np.ndarray, list[tuple[int, int, int, int]], tuple[int, int]]:
    """uint8 (T,size,size,3) frames of class `label` of `task`, the target's box per frame and the segment."""
    check_long(frames, size, task)
    length = int(rng.integers(SEGMENT[0], SEGMENT[1] + 1))
    first = int(rng.integers(0, frames - length + 1))
    segment = (first, first + length)
    background = textured_background(rng, size)
    palette = object_palette(rng, background)
    family = TASKS[task]
    sprite = family.target(rng, palette, label)
    offsets = np.rint(_steps(task, frames, segment)[:, None] * family.velocity(rng, label)).astype(int)
    if task == "motion":  # standing before and after the segment: still or jittering, like the distractors
        offsets += np.where(np.isin(np.arange(frames), np.arange(*segment))[:, None], 0, jitter(rng, frames))
    corners = placed_corners(rng, offsets, size - sprite.mask.shape[0])
    look = partial(family.distractor, rng, palette, label)
    placed = place_distractors(rng, look, int(rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1)), size, corners, sprite, [])
    behind = tuple(Track(distractor, home + jitter(rng, frames)) for distractor, home in placed)
    camera = np.zeros((frames, 2), dtype=int)
    shown = Track(sprite, corners)
    video, boxes = draw(Scene(background, camera, behind, shown, (), size)), shown.boxes()
    if task == "appearance":
        plain = Track(_neutral(sprite), corners)
        inside = np.zeros(frames, dtype=bool)
        inside[first:first + length] = True
        video = np.where(inside[:, None, None, None], video, draw(Scene(background, camera, behind, plain, (), size)))
        boxes = [box if inside[t] else other for t, (box, other) in enumerate(zip(boxes, plain.boxes()))]
    return video, boxes, segment


def write_long_benchmark(out: Path, videos: int, seed: int, lengths: tuple[int, int] = LONG_FRAMES,
                         codec: str = "libx264", size: int = 112, task: str = "motion") -> Path:
    """Write `videos` long videos of `task` (each of a length drawn from `lengths`, inclusive) as long-<seed>-<i>
    with out/manifest.csv holding every frame's box and the segment; return the manifest's path."""
    low, high = lengths
    if not 0 < low <= high:
        raise ConfigError(f"video lengths must be 0 < MIN <= MAX, got {low}-{high}")
    check_long(low, size, task)

    def render(rng: np.random.Generator, label: int):
        return render_long(rng, label, int(rng.integers(low, high + 1)), size, task)
    return write_videos(out, videos, seed, codec, size, task, "long", render)
