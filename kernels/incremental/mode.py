"""Choosing incremental or dense occlusion for a model and clip: `auto`, `on` or `off`."""

from __future__ import annotations

import torch

from aosa.kernels._utils import module_of
from aosa.kernels.incremental.buffers import BufferPool
from aosa.kernels.incremental.graphs import PlanGraphs
from aosa.kernels.incremental.model import IncrementalModel
from aosa.kernels.incremental.ops import NotIncremental
from aosa.kernels.scoring import Model
from aosa.schemas.method_params import INCREMENTAL as MODES

MIN_PREFIX_FRACTION = 0.5  # `auto` goes incremental when the local prefix holds at least this share of the flops
AUTO_DEVICES = ("cpu",)  # where `auto` may go incremental: on an H200 it ran 1.3-6x slower than dense for every
                         # model measured (many small gathers; the README's GPU table), so GPUs stay dense


def incremental_for(model: Model, clip: torch.Tensor, mode: str, logits: torch.Tensor,
                    pool: BufferPool | None = None,
                    graphs: PlanGraphs | None = None) -> tuple[IncrementalModel | None, str | None]:
    """The IncrementalModel to score occlusions of the (C, T, H, W) `clip` with, or None for the dense path, and
    why `auto` went dense where it tried (None where it did not try: `off`, or a device `auto` keeps dense).

    `on`: always, NotIncremental (one line) when the model cannot be traced, starts with a non-local op, or its
    traced module is not what scores its batches. `auto`: on AUTO_DEVICES, when it can and its local prefix holds
    MIN_PREFIX_FRACTION of the model's flops.
    `logits` (1, classes), the model's own output on the clip from the backend that scores its batches, guards
    against wrappers that do more than their `.module` (preprocessing, precision): if the traced module disagrees,
    the model is not incremental. `pool`: the scratch memory to reuse, `graphs`: the static plans (CUDA graphs)
    to replay (IncrementalModel).
    """
    if mode not in MODES:
        raise ValueError(f"unknown incremental mode {mode!r}; expected one of {', '.join(MODES)}")
    if mode == "off" or (mode == "auto" and clip.device.type not in AUTO_DEVICES):
        return None, None
    try:
        built = _build(model, clip, logits, pool, graphs)
    except NotIncremental as reason:
        if mode == "on":
            raise
        return None, str(reason)
    if mode == "auto" and built.prefix_fraction < MIN_PREFIX_FRACTION:
        return None, (f"the local prefix holds {built.prefix_fraction:.2f} of the model's flops "
                      f"(auto needs {MIN_PREFIX_FRACTION})")
    return built, None


def _build(model: Model, clip: torch.Tensor, logits: torch.Tensor, pool: BufferPool | None,
           graphs: PlanGraphs | None) -> IncrementalModel:
    """IncrementalModel of the module behind `model`, which must be what scores its batches and reproduce its
    logits."""
    try:
        module = module_of(model)
    except ValueError:
        raise NotIncremental(f"{type(model).__name__} exposes no torch module to trace") from None
    if getattr(model, "scoring_module", module) is not module:
        raise NotIncremental(f"{type(model).__name__} scores batches with a compiled engine or in reduced precision, "
                             "not with the fp32 module incremental occlusion traces")
    built = IncrementalModel(module, clip, pool=pool, graphs=graphs)
    ours, scale = built.clean_logits, max(1.0, float(logits.detach().abs().max()))
    theirs = logits.detach().to(ours.device, ours.dtype)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale):
        raise NotIncremental(f"{type(model).__name__}'s traced module does not reproduce the model's logits")
    return built
