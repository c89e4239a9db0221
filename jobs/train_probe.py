"""`python -m aosa.jobs.train_probe`: train the probe model (Probe3D) for one synthetic task and ship its weights.

Training clips of the task are rendered in memory (engine/datasets/synthetic.py, mixed variants); the
held-out check renders videos with another seed, encodes them as H.264, decodes them with load_clip and
must reach 95% accuracy on every variant before the state dict and its record (<stem>.train.json: seed,
hyperparameters, accuracy, sha256, versions) are written. Deterministic: the same seed and thread
count on the same machine give the same weights bit for bit.

    python -m aosa.jobs.train_probe --seed 0                     # engine/models/weights/probe.pth
    python -m aosa.jobs.train_probe --task appearance            # engine/models/weights/probe_appearance.pth
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.datasets.synthetic import TASKS, VARIANTS, render_clip, through_yuv420, write_benchmark
from aosa.engine.io.preprocess import load_clip, normalize
from aosa.engine.models.video.probe3d import probe3d
from aosa.engine.models.zoo import PROBE_POOLS, PROBE_PREPROCESSING, PROBE_WIDTHS, probe_weights
from aosa.jobs.common import run_guarded

TRAIN_SALT = 0x70726F62  # first word of every training clip's seed, so no write_benchmark(seed) stream repeats one
MIN_ACCURACY = 0.95
EVAL_SEED = 1000
EVAL_VIDEOS = 100
CROP_JITTER = 8  # px


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run: one epoch per side in `crops` on windows of that side around
    the target (the motion cue fills more of the pooled features, so learning starts), then `epochs` on
    full frames; `mix` is the share of training clips per variant; `task` the synthetic evidence family and
    `width` Probe3D's."""

    seed: int = 0
    train: int = 2000
    crops: tuple[int, ...] = (48,) * 3 + (80,) * 6
    epochs: int = 3
    batch_size: int = 16
    lr: float = 1e-3
    threads: int = 2
    frames: int = 16
    size: int = 112
    mix: dict[str, float] = field(default_factory=lambda: {"plain": 0.4, "pan": 0.35, "occluded": 0.25})
    task: str = "motion"
    width: int = 16
    pool: str = "avg"


# The shipped probes' settings: the appearance probe is wider (reading a look takes more channels than a
# direction), max-pools (its one moving object is not averaged with the distractors' looks) and spends more
# epochs on crops and on full frames.
TASK_CONFIGS = {"motion": TrainConfig(),
                "appearance": TrainConfig(task="appearance", width=PROBE_WIDTHS["appearance"],
                                          pool=PROBE_POOLS["appearance"], crops=(48,) * 5 + (80,) * 4, epochs=4)}


@dataclass(frozen=True)
class TrainingSet:
    """uint8 (N,T,H,W,3) clips, their labels (N,) and the (x, y) centre of each clip's crop windows (N,2)."""

    clips: np.ndarray
    labels: np.ndarray
    centres: np.ndarray

    def cropped(self, index: np.ndarray, side: int) -> np.ndarray:
        """Clips `index` cut to side x side windows about their centres, shifted to lie inside the frame."""
        corners = np.clip(self.centres[index] - side // 2, 0, self.clips.shape[2] - side)
        return np.stack([self.clips[i, :, y:y + side, x:x + side] for i, (x, y) in zip(index, corners)])


@contextmanager
def deterministic(seed: int, threads: int) -> Iterator[None]:
    """Seed torch, fix the thread count and demand deterministic kernels; restore all three afterwards."""
    saved_threads, saved_mode = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(saved_threads)
            torch.use_deterministic_algorithms(saved_mode)


def training_set(config: TrainConfig) -> TrainingSet:
    """Balanced clips through yuv420p, clip i drawn from default_rng([TRAIN_SALT, seed, i]), each with a
    crop centre up to CROP_JITTER px from its target's centre in the middle frame."""
    labels = np.arange(config.train) % len(TASKS[config.task].classes)
    variants, shares = list(config.mix), np.array(list(config.mix.values()))
    clips = np.empty((config.train, config.frames, config.size, config.size, 3), dtype=np.uint8)
    centres = np.empty((config.train, 2), dtype=int)
    for index, label in enumerate(labels):
        rng = np.random.default_rng([TRAIN_SALT, config.seed, index])
        variant = variants[rng.choice(len(variants), p=shares / shares.sum())]
        frames, boxes = render_clip(rng, int(label), config.frames, config.size, variant, config.task)
        clips[index] = through_yuv420(frames)
        x0, y0, x1, y1 = boxes[config.frames // 2]
        centres[index] = np.array([x0 + x1, y0 + y1]) // 2 + rng.integers(-CROP_JITTER, CROP_JITTER + 1, 2)
    return TrainingSet(clips, labels, centres)


def model_input(clips: np.ndarray) -> Tensor:
    """uint8 (B,T,H,W,3) clips -> float (B,3,T,H,W) normalized exactly as load_clip does for the probe."""
    return torch.stack([normalize(clip, PROBE_PREPROCESSING.mean, PROBE_PREPROCESSING.std) for clip in clips])


def untrained_probe(config: TrainConfig) -> nn.Module:
    """The Probe3D a config trains: its task's classes, its width and pooling (initialised from torch's RNG)."""
    return probe3d(num_classes=len(TASKS[config.task].classes), width=config.width, pool=config.pool)


def train(config: TrainConfig) -> dict[str, Tensor]:
    """Train Probe3D with Adam (cosine-decayed learning rate) and cross-entropy, crops first, then full
    frames; return its state dict."""
    data = training_set(config)
    sides = (*config.crops, *[None] * config.epochs)
    with deterministic(config.seed, config.threads):
        model = untrained_probe(config)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=len(sides) * math.ceil(config.train / config.batch_size))
        model.train()
        for epoch, side in enumerate(sides, start=1):
            began = time.perf_counter()
            loss = _epoch(model, optimizer, schedule, data, side, config.batch_size)
            print(f"epoch {epoch}/{len(sides)} ({f'{side}px crops' if side else 'full frames'}): "
                  f"mean loss {loss:.4f}, {time.perf_counter() - began:.0f} s", flush=True)
    return model.state_dict()


def _epoch(model: nn.Module, optimizer: torch.optim.Optimizer, schedule: torch.optim.lr_scheduler.LRScheduler,
           data: TrainingSet, side: int | None, batch_size: int) -> float:
    """One pass over the clips in random order, cut to their `side`-px windows unless None; the mean loss."""
    targets = torch.from_numpy(data.labels)
    losses = []
    for batch in torch.randperm(len(data.labels)).split(batch_size):
        index = batch.numpy()
        clips = data.clips[index] if side is None else data.cropped(index, side)
        loss = nn.functional.cross_entropy(model(model_input(clips)), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def manifest_accuracy(model: nn.Module, manifest: Path) -> float:
    """Share of a labelled manifest's videos that `model` classifies right, clips read with load_clip."""
    rows = read_manifest(manifest)
    model.eval()
    with torch.no_grad():
        right = sum(int(model(load_clip(row.path, PROBE_PREPROCESSING).tensor[None]).argmax()) == row.label
                    for row in rows)
    return right / len(rows)


def held_out_accuracy(state: dict[str, Tensor], seed: int, videos: int, config: TrainConfig) -> dict[str, float]:
    """Accuracy per variant on `videos` H.264 videos of the config's task per variant, written with `seed`
    and decoded again."""
    model = untrained_probe(config)
    model.load_state_dict(state)
    with tempfile.TemporaryDirectory() as workdir:
        return {variant: manifest_accuracy(model, write_benchmark(Path(workdir) / variant, videos, seed,
                                                                  variant=variant, task=config.task))
                for variant in VARIANTS}


def save(state: dict[str, Tensor], out: Path, record: dict[str, object]) -> Path:
    """Write the state dict to `out` and the record plus its sha256 beside it as <stem>.train.json."""
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    meta = out.with_name(f"{out.stem}.train.json")
    record = {**record, "weights": out.name, "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
              "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
              "machine": platform.machine()}
    meta.write_text(json.dumps(record, indent=2) + "\n")
    return meta


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa train_probe", description=__doc__.split("\n\n")[0],
                                     epilog="Hyperparameters left out take the task's defaults (TASK_CONFIGS).")
    parser.add_argument("--task", choices=TASKS, default="motion", help="synthetic evidence family")
    parser.add_argument("--out", type=Path, help="state dict to write (default: the zoo's weights for the task)")
    parser.add_argument("--seed", type=int, help="training seed (clips, init, order)")
    parser.add_argument("--train", type=int, help="training clips")
    parser.add_argument("--crops", type=_sides, help="crop side of each first epoch, comma-separated")
    parser.add_argument("--epochs", type=int, help="passes over the full frames")
    parser.add_argument("--batch-size", type=int, help="clips per step")
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--threads", type=int, help="torch CPU threads (results are reproducible for a fixed count)")
    parser.add_argument("--eval-seed", type=int, default=EVAL_SEED, help="seed of the held-out videos")
    parser.add_argument("--eval-videos", type=int, default=EVAL_VIDEOS, help="held-out videos per variant")
    return parser


def _sides(text: str) -> tuple[int, ...]:
    """'48,48,80' -> (48, 48, 80); an empty string means no crop epochs."""
    return tuple(int(side) for side in text.split(",") if side.strip())


def run(args: argparse.Namespace) -> int:
    given = {name: getattr(args, name) for name in ("seed", "train", "crops", "epochs", "batch_size", "lr", "threads")}
    config = replace(TASK_CONFIGS[args.task], **{name: value for name, value in given.items() if value is not None})
    out = args.out or probe_weights(args.task)
    began = time.perf_counter()
    state = train(config)
    seconds = time.perf_counter() - began
    accuracy = held_out_accuracy(state, args.eval_seed, args.eval_videos, config)
    print(f"trained in {seconds:.0f} s; held-out accuracy (H.264, seed {args.eval_seed}): "
          + ", ".join(f"{variant} {value:.3f}" for variant, value in accuracy.items()))
    if min(accuracy.values()) < MIN_ACCURACY:
        print(f"aosa train_probe: error: held-out accuracy below {MIN_ACCURACY}; {out} not written",
              file=sys.stderr)
        return 1
    record = {"config": asdict(config), "train_seconds": round(seconds, 1), "accuracy": accuracy,
              "held_out": {"seed": args.eval_seed, "videos_per_variant": args.eval_videos, "codec": "libx264"}}
    print(f"wrote {out} and {save(state, out, record)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("train_probe", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
