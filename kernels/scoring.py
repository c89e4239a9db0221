"""The scalar a method explains: target-class softmax probability (default) or logit."""

from __future__ import annotations

from collections.abc import Callable

import torch

Model = Callable[[torch.Tensor], torch.Tensor]


def batch_format(model: Model) -> torch.memory_format:
    """The memory layout `model` runs batches fastest in, where it says (`model.batch_format`), else contiguous:
    builders of clip batches (occlusion) write them in it."""
    return getattr(model, "batch_format", torch.contiguous_format)


def channel_inner(tensor: torch.Tensor) -> torch.Tensor:
    """(..., C, T, H, W) -> (..., T, H, W*C), the memory order of a channels-last tensor (a view of one): batch
    builders write channels-last batches through it, every operand walking memory in order."""
    return tensor.movedim(-4, -1).flatten(-2)


def target_scores(logits: torch.Tensor, target: int, kind: str = "prob") -> torch.Tensor:
    """Scores (B,) of class `target` from logits (B, classes)."""
    if kind == "prob":
        return torch.softmax(logits.float(), dim=1)[:, target]
    if kind == "logit":
        return logits[:, target].float()
    raise ValueError(f"unknown score {kind!r}; expected prob or logit")


class ScoreFunction:
    """f(batch) -> (B,) target scores of a model that maps (B, C, T, H, W) to logits."""

    def __init__(self, model: Model, target: int, kind: str = "prob") -> None:
        self.model, self.target, self.kind = model, target, kind
        self.batch_format = batch_format(model)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return target_scores(self.model(batch), self.target, self.kind)
