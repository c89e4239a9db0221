"""The synthetic probe benchmark (DESIGN.md section 6): clips whose class is known evidence about one target.

A clip is a textured static background, one target and 2-4 distractors (14-20 px, similar colours). The
target moves 2-4 px/frame and stays wholly inside the frame; distractors are static or jitter by +-1 px.
Tasks (evidence families, TASKS): "motion" (all objects look alike, textured squares or discs; the class
is the target's direction: right, left, down, up) and "appearance" (the target moves in a random
direction; the class is its look, engine.datasets.sprites.LOOKS, and the distractors show the other
looks). Variants: "plain"; "pan" (the whole picture shifts 1 px/frame in one random axis direction);
"occluded" (the target passes behind one static distractor). Every frame's target box is the target's
full extent, x1/y1 exclusive, also where the occluder hides part of it.

    frames, boxes = render_clip(np.random.default_rng(0), label=2)           # (16,112,112,3), 16 boxes
    manifest = write_benchmark(Path("out/synth"), videos=40, seed=0, task="appearance")
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from aosa.engine.datasets.sprites import LOOKS, SIDE, Sprite, patterned_sprite, smooth, textured_sprite, to_uint8
from aosa.engine.errors import ConfigError
from aosa.engine.io.colour import rgb_frame
from aosa.engine.io.frames import CODEC as FRAMES
from aosa.schemas.manifest import MANIFEST_COLUMNS

# Class name -> target step direction (dx, dy), in the order of the probe model's classes.
DIRECTIONS: dict[str, tuple[int, int]] = {"right": (1, 0), "left": (-1, 0), "down": (0, 1), "up": (0, -1)}
VARIANTS = ("plain", "pan", "occluded")
SPEED = (2.0, 4.0)  # target px/frame
DISTRACTORS = (2, 4)  # inclusive
GAP = 2  # px kept free between distractors and the target's path
PLACEMENT_TRIES = 500
FPS = 25
# Encoder -> (file suffix, near-lossless options); VP9 goes in .webm, which DALI's CPU decoder reads.
ENCODERS: dict[str, tuple[str, dict[str, str]]] = {
    "libx264": (".mp4", {"crf": "4", "preset": "ultrafast"}),
    "libvpx-vp9": (".webm", {"lossless": "1", "deadline": "realtime", "cpu-used": "8"}),
    FRAMES: ("", {"quality": "95", "subsampling": "0"}),  # a directory of JPEG frames (3D-ResNets layout), Pillow
}


@dataclass(frozen=True)
class Task:
    """An evidence family: its class names and, for a label, the target's look, the target's velocity
    (dx, dy) in px/frame and one distractor's look; each draws from the rng it is given."""

    classes: tuple[str, ...]
    target: Callable[[np.random.Generator, np.ndarray, int], Sprite]
    velocity: Callable[[np.random.Generator, int], np.ndarray]
    distractor: Callable[[np.random.Generator, np.ndarray, int], Sprite]


def _class_direction(rng: np.random.Generator, label: int) -> np.ndarray:
    """2-4 px/frame in the direction class `label` names."""
    return rng.uniform(*SPEED) * np.array(list(DIRECTIONS.values())[label])


def _any_direction(rng: np.random.Generator, label: int) -> np.ndarray:
    """2-4 px/frame at a uniformly random angle, whatever the label."""
    speed, angle = rng.uniform(*SPEED), rng.uniform(0, 2 * np.pi)
    return speed * np.array([np.cos(angle), np.sin(angle)])


def _alike(rng: np.random.Generator, palette: np.ndarray, label: int) -> Sprite:
    """A textured square or disc whatever the label: in the motion task all objects look alike."""
    return textured_sprite(rng, palette)


def _class_look(rng: np.random.Generator, palette: np.ndarray, label: int) -> Sprite:
    """A sprite of class `label`'s look."""
    return patterned_sprite(rng, palette, list(LOOKS)[label])


def _other_look(rng: np.random.Generator, palette: np.ndarray, label: int) -> Sprite:
    """A sprite of a random look other than class `label`'s."""
    others = [look for index, look in enumerate(LOOKS) if index != label]
    return patterned_sprite(rng, palette, others[rng.integers(len(others))])


TASKS: dict[str, Task] = {
    "motion": Task(tuple(DIRECTIONS), _alike, _class_direction, _alike),
    "appearance": Task(tuple(LOOKS), _class_look, _any_direction, _other_look),
}


@dataclass(frozen=True)
class Track:
    """A sprite and its top-left corner (x, y) in frame pixels, one row per frame (T,2)."""

    sprite: Sprite
    corners: np.ndarray

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Per frame (x0, y0, x1, y1) of the pixels the sprite covers, x1/y1 exclusive."""
        rows, cols = np.nonzero(self.sprite.mask)
        extent = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1])
        return [tuple(int(v) for v in extent + np.tile(corner, 2)) for corner in self.corners]


@dataclass(frozen=True)
class Scene:
    """Everything a clip is drawn from: a background canvas larger than the frame, the frame window's
    top-left corner in it per frame (T,2), and the objects in drawing order: behind, target, in front."""

    background: np.ndarray
    camera: np.ndarray
    behind: tuple[Track, ...]
    target: Track
    front: tuple[Track, ...]
    size: int


def render_clip(rng: np.random.Generator, label: int, frames: int = 16, size: int = 112,
                variant: str = "plain", task: str = "motion") -> tuple[np.ndarray, list[tuple[int, int, int, int]]]:
    """uint8 (T,size,size,3) RGB frames of class `label` of `task` and the target box per frame."""
    scene = make_scene(rng, label, frames, size, variant, task)
    return draw(scene), scene.target.boxes()


def make_scene(rng: np.random.Generator, label: int, frames: int = 16, size: int = 112,
               variant: str = "plain", task: str = "motion") -> Scene:
    """Draw every random choice of one clip from `rng` (deterministic for a seed)."""
    _check_options(label, frames, size, variant, task)
    shift = _pan(rng) if variant == "pan" else np.zeros(2, dtype=int)
    drift = np.arange(frames)[:, None] * shift  # where the content has moved to by frame t
    background = textured_background(rng, size + 2 * frames)
    camera = frames - drift
    palette = object_palette(rng, background)
    family = TASKS[task]
    sprite = family.target(rng, palette, label)
    corners = _target_corners(rng, family.velocity(rng, label), size - sprite.mask.shape[0], drift)
    target = Track(sprite, corners)
    path = target.corners - drift  # the target's corners in frame-0 coordinates
    look = partial(family.distractor, rng, palette, label)
    occluders = [_occluder(rng, look, path, sprite)] if variant == "occluded" else []
    count = rng.integers(DISTRACTORS[0], DISTRACTORS[1] + 1) - len(occluders)
    placed = place_distractors(rng, look, count, size, path, sprite, [home for _, home in occluders])
    behind, front = (tuple(Track(look, home + jitter(rng, frames) + drift) for look, home in group)
                     for group in (placed, occluders))
    return Scene(background, camera, behind, target, front, size)


def draw(scene: Scene) -> np.ndarray:
    """Render a scene to uint8 (T,H,W,3) frames: background window, then objects in drawing order."""
    tracks = (*scene.behind, scene.target, *scene.front)
    out = []
    for t, (x, y) in enumerate(scene.camera):
        frame = scene.background[y:y + scene.size, x:x + scene.size].copy()
        for track in tracks:
            _paste(frame, track.sprite, track.corners[t])
        out.append(frame)
    return np.stack(out)


def _check_options(label: int, frames: int, size: int, variant: str, task: str) -> None:
    """Reject a task, class, length, size or variant the generator cannot draw."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    classes = TASKS[task].classes
    if not 0 <= label < len(classes):
        raise ConfigError(f"label must be 0..{len(classes) - 1} ({', '.join(classes)}), got {label}")
    if variant not in VARIANTS:
        raise ConfigError(f"unknown variant {variant!r}; expected one of {', '.join(VARIANTS)}")
    if frames < 2:
        raise ConfigError(f"frames must be at least 2, got {frames}")
    reach = SIDE[1] + (frames - 1) * (SPEED[1] + 1)  # largest object, fastest target, panning
    if size < reach:
        raise ConfigError(f"a {size}px frame cannot hold {frames} frames of target motion; need size >= {reach:g}")


def _pan(rng: np.random.Generator) -> np.ndarray:
    """A random axis direction: the picture's shift per frame."""
    return np.array(list(DIRECTIONS.values())[rng.integers(len(DIRECTIONS))])


def textured_background(rng: np.random.Generator, side: int) -> np.ndarray:
    """uint8 (side,side,3): colour blobs over a random base colour, plus fine grey grain (grey, like the
    objects' texture, so 4:2:0 chroma subsampling leaves it intact)."""
    base = rng.uniform(0.25, 0.75, 3)
    blobs = smooth(rng, side, side, cell=int(rng.integers(10, 24))) - 0.5
    grain = rng.normal(0, 0.03, (side, side, 1))
    return to_uint8(base + 0.35 * blobs + grain)


def object_palette(rng: np.random.Generator, background: np.ndarray) -> np.ndarray:
    """The objects' shared colour: each channel 0.3 away from the background's mean, plus a little noise."""
    mean = background.mean(axis=(0, 1)) / 255
    return mean + np.where(mean < 0.5, 0.3, -0.3) + rng.normal(0, 0.05, 3)


def _target_corners(rng: np.random.Generator, velocity: np.ndarray, room: int, drift: np.ndarray) -> np.ndarray:
    """(T,2) corners moving at `velocity` px/frame, rounded to whole pixels (plus the drift), each in
    [0, room] so that the target stays inside the frame throughout."""
    return placed_corners(rng, np.rint(np.arange(len(drift))[:, None] * velocity).astype(int) + drift, room)


def placed_corners(rng: np.random.Generator, offsets: np.ndarray, room: int) -> np.ndarray:
    """(T,2) integer `offsets` moved to a random place where every corner lies in [0, room]."""
    low, high = -offsets.min(axis=0), room - offsets.max(axis=0)
    return rng.integers(low, high + 1) + offsets


def _occluder(rng: np.random.Generator, look: Callable[[], Sprite], path: np.ndarray,
              target: Sprite) -> tuple[Sprite, np.ndarray]:
    """A distractor `look()` and its home centred on the target's position at a random frame in the middle half."""
    sprite = look()
    moment = rng.integers(len(path) // 4, 3 * len(path) // 4 + 1)
    return sprite, path[moment] + (target.mask.shape[0] - sprite.mask.shape[0]) // 2


def place_distractors(rng: np.random.Generator, look: Callable[[], Sprite], count: int, size: int,
                      path: np.ndarray, target: Sprite, homes: list[np.ndarray]) -> list[tuple[Sprite, np.ndarray]]:
    """Up to `count` distractors `look()` at random homes inside frame 0, clear of the target's path and of
    `homes`."""
    taken = [_swept(path, target.mask.shape[0])] + [_swept(home[None], SIDE[1]) for home in homes]
    placed = []
    for _ in range(count):
        sprite = look()
        side = sprite.mask.shape[0]
        home = next((h for h in rng.integers(0, size - side + 1, (PLACEMENT_TRIES, 2))
                     if not any(_overlaps(h, side, box) for box in taken)), None)
        if home is None and len(placed) + len(homes) >= DISTRACTORS[0]:
            break  # a small frame holds fewer distractors, never under the minimum
        if home is None:
            raise ConfigError(f"no room for {DISTRACTORS[0]} distractors in a {size}px frame")
        taken.append(_swept(home[None], side))
        placed.append((sprite, home))
    return placed


def _swept(corners: np.ndarray, side: int) -> np.ndarray:
    """(x0, y0, x1, y1) covering a side-px object at every corner, grown by GAP (+1 for jitter)."""
    grow = GAP + 1
    return np.concatenate([corners.min(axis=0) - grow, corners.max(axis=0) + side + grow])


def _overlaps(corner: np.ndarray, side: int, box: np.ndarray) -> bool:
    """Whether a side-px object at `corner` intersects `box` (x0, y0, x1, y1)."""
    return bool(np.all(corner < box[2:]) and np.all(corner + side > box[:2]))


def jitter(rng: np.random.Generator, frames: int) -> np.ndarray:
    """(T,2) offsets: all zero (static) or each -1, 0 or 1 (jitter), at even odds."""
    if rng.random() < 0.5:
        return np.zeros((frames, 2), dtype=int)
    return rng.integers(-1, 2, (frames, 2))


def _paste(frame: np.ndarray, sprite: Sprite, corner: np.ndarray) -> None:
    """Draw the sprite's masked pixels with its top-left at `corner` (x, y), clipped to the frame."""
    height, width = sprite.mask.shape
    x, y = int(corner[0]), int(corner[1])
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + width, frame.shape[1]), min(y + height, frame.shape[0])
    if x1 <= x0 or y1 <= y0:
        return
    mask = sprite.mask[y0 - y:y1 - y, x0 - x:x1 - x]
    frame[y0:y1, x0:x1][mask] = sprite.pixels[y0 - y:y1 - y, x0 - x:x1 - x][mask]


# Draws one video of a label from an rng: uint8 (T,H,W,3) frames, the target's box per frame and, for videos whose
# evidence lies in a known segment of frames, that segment [first, end) (else None).
Render = Callable[[np.random.Generator, int], tuple[np.ndarray, list[tuple[int, int, int, int]], tuple[int, int] | None]]


def write_benchmark(out: Path, videos: int, seed: int, codec: str = "libx264", variant: str = "plain",
                    frames: int = 16, size: int = 112, task: str = "motion") -> Path:
    """Write `videos` clips of `task` (labels cycling through its classes) to out/videos and out/manifest.csv
    (paths relative to `out`, boxes of every frame); return the manifest's path.

    Video i is drawn from default_rng([seed, i]): the same seed gives the same manifest bytes and frames.
    Files are named <variant>-<seed>-<i>, prefixed with the task unless it is "motion".
    """
    return write_videos(out, videos, seed, codec, size, task, variant,
                        lambda rng, label: (*render_clip(rng, label, frames, size, variant, task), None))


def write_videos(out: Path, videos: int, seed: int, codec: str, size: int, task: str, name: str,
                 render: Render) -> Path:
    """Write `videos` videos drawn by `render` (labels cycling through the task's classes) as <name>-<seed>-<i>
    (prefixed with the task unless it is "motion") under out/videos, and out/manifest.csv; return its path."""
    if task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if codec not in ENCODERS:
        raise ConfigError(f"unknown codec {codec!r}; expected one of {', '.join(ENCODERS)}")
    if videos < 1 or seed < 0:
        raise ConfigError(f"need videos >= 1 and seed >= 0, got videos={videos}, seed={seed}")
    if size % 2:
        raise ConfigError(f"size must be even (4:2:0 video), got {size}")
    out = Path(out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    records = [_write_video(out, codec, name, task, seed, index, render) for index in range(videos)]
    manifest = out / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(records)
    return manifest


def _write_video(out: Path, codec: str, name: str, task: str, seed: int, index: int,
                 render: Render) -> dict[str, object]:
    """Render video `index` from default_rng([seed, index]), encode it under out/videos and return its
    manifest record."""
    label = index % len(TASKS[task].classes)
    clip, boxes, segment = render(np.random.default_rng([seed, index]), label)
    prefix = "" if task == "motion" else f"{task}-"
    relative = f"videos/{prefix}{name}-{seed}-{index:05d}{ENCODERS[codec][0]}"
    (write_frames if codec == FRAMES else encode)(out / relative, clip, codec)
    return {"video_id": Path(relative).stem, "path": relative, "label": label,
            "boxes": json.dumps([[t, *box] for t, box in enumerate(boxes)]),
            "segment": json.dumps(list(segment)) if segment else None}


def encode(path: Path, frames: np.ndarray, codec: str = "libx264") -> None:
    """Encode uint8 (T,H,W,3) RGB frames into `path` with the codec's near-lossless settings (yuv420p)."""
    import av  # only encoding needs PyAV: frame directories are written with Pillow

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=FPS, options=ENCODERS[codec][1])
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())


def write_frames(folder: Path, frames: np.ndarray, codec: str = FRAMES) -> None:
    """Write uint8 (T,H,W,3) RGB frames as folder/image_00001.jpg, ... (JPEG, 4:4:4, quality 95)."""
    folder.mkdir(parents=True, exist_ok=True)
    options = ENCODERS[codec][1]
    for index, image in enumerate(frames, start=1):
        Image.fromarray(image).save(folder / f"image_{index:05d}.jpg", quality=int(options["quality"]),
                                    subsampling=int(options["subsampling"]))


def through_yuv420(frames: np.ndarray) -> np.ndarray:
    """uint8 (T,H,W,3) RGB frames after the RGB -> yuv420p conversion `encode` applies and the one YUV -> RGB
    conversion every decoder applies (engine.io.colour): what a near-lossless 4:2:0 video gives back."""
    import av

    return np.stack([rgb_frame(av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p"))
                     for frame in frames])
