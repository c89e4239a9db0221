"""Built-in architectures with their preprocessing, like torchvision's weights enums; nothing is downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
from torch import nn
from torchvision import models

from engine.probe3d import probe3d
from schemas.preprocessing import Preprocessing

SEED = 0
FRAMES = 16
PROBE_CLASSES = ("right", "left", "down", "up")


@dataclass(frozen=True)
class ZooEntry:
    """How to build one architecture (deterministic random init) and the clip it expects."""

    builder: Callable[[], nn.Module]
    preprocessing: Preprocessing


def _seeded(builder: Callable[[], nn.Module]) -> nn.Module:
    """Build under a fixed seed without touching the caller's RNG, so a spec means the same model everywhere."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return builder()


def _torchvision_entry(name: str) -> ZooEntry:
    """Kinetics-400 video model `name`, random init; preprocessing read from its weights' metadata offline."""
    weights = models.get_model_weights(name).DEFAULT
    transform = weights.transforms()
    preprocessing = Preprocessing(frames=FRAMES, size=tuple(transform.crop_size), mean=tuple(transform.mean),
                                  std=tuple(transform.std), classes=tuple(weights.meta["categories"]))
    return ZooEntry(partial(_seeded, partial(models.get_model_builder(name), weights=None)), preprocessing)


ZOO: dict[str, ZooEntry] = {
    **{f"torchvision:{name}": _torchvision_entry(name) for name in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d")},
    "probe3d": ZooEntry(partial(_seeded, probe3d), Preprocessing(
        frames=FRAMES, size=(112, 112), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), classes=PROBE_CLASSES)),
}
