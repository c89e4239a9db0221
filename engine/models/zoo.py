"""Built-in architectures with their preprocessing, like torchvision's weights enums; nothing is downloaded."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torchvision import models

from aosa.engine.datasets.sprites import LOOKS
from aosa.engine.errors import ModelError
from aosa.engine.models.video.hara import hara_r2plus1d50, hara_r3d50
from aosa.engine.models.video.probe3d import probe3d
from aosa.engine.models.video.slowfast_x3d import slowfast_r50, x3d
from aosa.schemas.preprocessing import Preprocessing

SEED = 0
FRAMES = 16
PROBE_CLASSES = ("right", "left", "down", "up")  # the motion task's classes (engine.datasets.synthetic.TASKS)
PROBE_PREPROCESSING = Preprocessing(frames=FRAMES, size=(112, 112), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                                    classes=PROBE_CLASSES)
PROBE_WEIGHTS = Path(__file__).parent / "weights" / "probe.pth"  # shipped as package data; jobs/train_probe.py
# Synthetic task -> its probe's classes, in the order of engine.datasets.synthetic.TASKS[task].classes.
PROBE_TASKS = {"motion": PROBE_CLASSES, "appearance": tuple(LOOKS)}
PROBE_WIDTHS = {"motion": 16, "appearance": 32}  # Probe3D width per task: reading a look needs more channels
PROBE_POOLS = {"motion": "avg", "appearance": "max"}  # ... and its pooling: one moving object among distractors
SWIN_FRAMES = 32  # clip_len of the evaluation in Swin3D_T_Weights' docs (its meta's min_temporal_size is only 1)
HARA_CLASSES = 700  # Kinetics-700 pretraining; a checkpoint's fc sets the count it loads with
HARA_PREPROCESSING = Preprocessing(frames=FRAMES, size=(112, 112), mean=(0.4345, 0.4051, 0.3775),
                                   std=(0.2768, 0.2713, 0.2737))  # mean.py "kinetics" on 0-1 values; no class list
KINETICS400 = tuple(models.video.R3D_18_Weights.DEFAULT.meta["categories"])  # alphabetical, as PySlowFast indexes
X3D_HEAD = "blocks.5.proj.weight"


@dataclass(frozen=True)
class ZooEntry:
    """How to build one architecture (deterministic random init) and the clip it expects."""

    builder: Callable[..., nn.Module]
    preprocessing: Preprocessing
    arch: str | None = None  # the "arch" the original training code records in its checkpoints; another is refused
    head: str | None = None  # classifier weight's state-dict key: when set, builder(num_classes=its rows) loads weights
    channels_last: bool = True  # a 3D CNN: batches built channels-last run faster on a CPU (transformers: False)


def _seeded(builder: Callable[..., nn.Module], **kwargs: int) -> nn.Module:
    """Build under a fixed seed without touching the caller's RNG, so a spec means the same model everywhere."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        return builder(**kwargs)


def _torchvision_entry(name: str, frames: int = FRAMES, channels_last: bool = True) -> ZooEntry:
    """Kinetics-400 video model `name`, random init; preprocessing read from its weights' metadata offline."""
    weights = models.get_model_weights(name).DEFAULT
    transform = weights.transforms()
    preprocessing = Preprocessing(frames=frames, size=tuple(transform.crop_size), mean=tuple(transform.mean),
                                  std=tuple(transform.std), classes=tuple(weights.meta["categories"]))
    return ZooEntry(partial(_seeded, partial(models.get_model_builder(name), weights=None)), preprocessing,
                    channels_last=channels_last)


def _pytorchvideo_entry(builder: Callable[..., nn.Module], frames: int, crop: int, head: str) -> ZooEntry:
    """A PyTorchVideo Kinetics-400 model with the clip (frames, crop) its model zoo evaluated it on (the fast
    clip for SlowFast); its checkpoint's `head` weight sets the class count it loads with."""
    preprocessing = Preprocessing(frames=frames, size=(crop, crop), mean=(0.45,) * 3, std=(0.225,) * 3,
                                  classes=KINETICS400)
    return ZooEntry(partial(_seeded, builder), preprocessing, head=head)


def probe_weights(task: str) -> Path:
    """Where the shipped probe for a synthetic task lives: probe.pth (motion) or probe_<task>.pth beside it."""
    return PROBE_WEIGHTS if task == "motion" else PROBE_WEIGHTS.with_name(f"probe_{task}.pth")


def probe_preprocessing(task: str) -> Preprocessing:
    """The probe input for a synthetic task: the motion probe's, with the task's class names."""
    return dataclasses.replace(PROBE_PREPROCESSING, classes=PROBE_TASKS[task])


def _trained_probe(task: str = "motion") -> nn.Module:
    """Probe3D with the shipped weights trained on the synthetic benchmark's `task` (DESIGN.md section 6)."""
    weights = probe_weights(task)
    if not weights.is_file():
        option = "" if task == "motion" else f" --task {task}"
        raise ModelError(f"probe: trained weights {weights} are missing; "
                         f"create them with `python -m aosa.jobs.train_probe{option}`")
    module = _seeded(probe3d, num_classes=len(PROBE_TASKS[task]), width=PROBE_WIDTHS[task], pool=PROBE_POOLS[task])
    module.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return module


ZOO: dict[str, ZooEntry] = {
    **{f"torchvision:{name}": _torchvision_entry(name) for name in ("r3d_18", "mc3_18", "r2plus1d_18", "s3d")},
    **{f"torchvision:{name}": _torchvision_entry(name, channels_last=False) for name in ("mvit_v1_b", "mvit_v2_s")},
    "torchvision:swin3d_t": _torchvision_entry("swin3d_t", frames=SWIN_FRAMES, channels_last=False),
    "hara:r3d_50": ZooEntry(partial(_seeded, hara_r3d50, num_classes=HARA_CLASSES), HARA_PREPROCESSING,
                            arch="resnet-50", head="fc.weight"),
    "hara:r2plus1d_50": ZooEntry(partial(_seeded, hara_r2plus1d50, num_classes=HARA_CLASSES), HARA_PREPROCESSING,
                                 arch="resnet2p1d-50", head="fc.weight"),
    "pytorchvideo:slowfast_r50": _pytorchvideo_entry(slowfast_r50, 32, 256, "blocks.6.proj.weight"),
    "pytorchvideo:x3d_xs": _pytorchvideo_entry(partial(x3d, "x3d_xs"), 4, 182, X3D_HEAD),
    "pytorchvideo:x3d_s": _pytorchvideo_entry(partial(x3d, "x3d_s"), 13, 182, X3D_HEAD),
    "pytorchvideo:x3d_m": _pytorchvideo_entry(partial(x3d, "x3d_m"), 16, 256, X3D_HEAD),
    "probe3d": ZooEntry(partial(_seeded, probe3d), PROBE_PREPROCESSING),
    "probe": ZooEntry(_trained_probe, PROBE_PREPROCESSING),
    **{f"probe:{task}": ZooEntry(partial(_trained_probe, task), probe_preprocessing(task)) for task in PROBE_TASKS},
}
