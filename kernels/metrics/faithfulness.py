"""Deletion / insertion (RISE protocol over the whole T x H x W volume) and the over-all score (DESIGN.md 5)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernels.filters import blur_frames

Score = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion curves (steps + 1 scores each), their AUCs and over-all = insertion - deletion."""

    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: float
    insertion_auc: float
    overall: float


def auc(curve: torch.Tensor) -> float:
    """Trapezoidal area under a curve of N + 1 equally spaced scores on [0, 1]: (sum - a0/2 - aN/2) / N."""
    curve = curve.double()
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (curve.numel() - 1))


def rank_order(saliency: torch.Tensor) -> torch.Tensor:
    """Flat voxel indices by saliency, descending; ties keep raster (flat index) order."""
    return torch.sort(saliency.flatten(), descending=True, stable=True).indices


@torch.no_grad()
def perturbation_curve(score: Score, start: torch.Tensor, end: torch.Tensor, order: torch.Tensor,
                       steps: int = 28, batch_size: int = 16) -> torch.Tensor:
    """Scores (steps + 1,) as voxels move from `start` to `end` (C, T, H, W), ceil(THW / steps) per step in `order`.

    A voxel moves all channels; the step clips are built `batch_size` at a time.
    """
    channels, voxels = start.shape[0], order.numel()
    per_step = math.ceil(voxels / steps)
    rank = torch.empty(voxels, dtype=torch.long, device=start.device)
    rank[order.to(start.device)] = torch.arange(voxels, device=start.device)
    start_flat, end_flat = start.reshape(channels, 1, voxels), end.reshape(channels, 1, voxels)
    scores = []
    for first in range(0, steps + 1, batch_size):
        moved_counts = torch.arange(first, min(first + batch_size, steps + 1), device=start.device) * per_step
        moved = rank < moved_counts[:, None]                              # (b, THW)
        batch = torch.where(moved, end_flat, start_flat).transpose(0, 1)  # (b, C, THW)
        scores.append(score(batch.reshape(-1, *start.shape)).detach().cpu())
    return torch.cat(scores)


def deletion_curve(score: Score, clip: torch.Tensor, saliency: torch.Tensor,
                   steps: int = 28, batch_size: int = 16) -> torch.Tensor:
    """Scores as the most salient voxels go from the clip to the `mean` substrate (zero in normalized space)."""
    return perturbation_curve(score, clip, torch.zeros_like(clip), rank_order(saliency), steps, batch_size)


def insertion_curve(score: Score, clip: torch.Tensor, saliency: torch.Tensor,
                    steps: int = 28, batch_size: int = 16) -> torch.Tensor:
    """Scores as the most salient voxels go from the blurred clip (per frame, kernel 11, sigma 5) to the clip."""
    return perturbation_curve(score, blur_frames(clip), clip, rank_order(saliency), steps, batch_size)


def faithfulness(score: Score, clip: torch.Tensor, saliency: torch.Tensor,
                 steps: int = 28, batch_size: int = 16) -> Faithfulness:
    """Deletion and insertion of a (C, T, H, W) clip ranked by a (T, H, W) map; `score` maps batches to (B,)."""
    if saliency.shape != clip.shape[1:]:
        raise ValueError(f"saliency shape {tuple(saliency.shape)} does not match clip (T, H, W) "
                         f"{tuple(clip.shape[1:])}")
    deletion = deletion_curve(score, clip, saliency, steps, batch_size)
    insertion = insertion_curve(score, clip, saliency, steps, batch_size)
    deletion_auc, insertion_auc = auc(deletion), auc(insertion)
    return Faithfulness(deletion, insertion, deletion_auc, insertion_auc, insertion_auc - deletion_auc)
