"""Cascade randomization sanity check (Adebayo et al. 2018): a faithful map decorrelates as layers re-initialize."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a flat tensor, ties given the mean of the ranks they span (float64)."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two same-size tensors over all elements (Pearson of tie-averaged ranks).

    A constant tensor ranks nothing: against a non-constant one that is 0 (no agreement), and two constant
    tensors agree fully (1), so a map that randomization flattens counts as decorrelated, never as NaN.
    """
    if a.numel() != b.numel():
        raise ValueError(f"spearman needs equal sizes, got {a.numel()} and {b.numel()}")
    ranks_a = average_ranks(a.detach().flatten().cpu()) - (a.numel() + 1) / 2
    ranks_b = average_ranks(b.detach().flatten().cpu()) - (b.numel() + 1) / 2
    norms = ranks_a.norm() * ranks_b.norm()
    if norms == 0:
        return 1.0 if ranks_a.norm() == ranks_b.norm() == 0 else 0.0
    return float((ranks_a @ ranks_b) / norms)


def cascade_layers(model: nn.Module) -> list[str]:
    """Leaf modules that hold parameters, from the logits down (reverse registration order)."""
    leaves = [name for name, module in model.named_modules()
              if not any(module.children()) and next(module.parameters(recurse=False), None) is not None]
    return leaves[::-1]


def reinitialize(module: nn.Module, seed: int) -> None:
    """Re-initialize every submodule that has reset_parameters(), with a seeded RNG forked from the global one."""
    resettable = [m for m in module.modules() if hasattr(m, "reset_parameters")]
    if not resettable:
        raise ValueError(f"{type(module).__name__} has no submodule with reset_parameters()")
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for submodule in resettable:
            submodule.reset_parameters()


def cascade_randomization(model: nn.Module, explain: Callable[[nn.Module], torch.Tensor],
                          layers: Sequence[str] | None = None, seed: int = 0) -> list[tuple[str, float]]:
    """(layer, Spearman correlation with the original map) after cumulatively re-initializing each layer in turn.

    `explain(model)` returns a saliency map; it runs on a deep copy, so the caller's model is never modified.
    """
    model = copy.deepcopy(model)
    original = explain(model)
    results = []
    for step, name in enumerate(cascade_layers(model) if layers is None else layers):
        reinitialize(model.get_submodule(name), seed + step)
        results.append((name, spearman(original, explain(model))))
    return results
