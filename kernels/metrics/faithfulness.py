"""Deletion / insertion (RISE protocol over the whole T x H x W volume) and the over-all score (DESIGN.md 5)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from aosa.kernels.filters import blur_frames
from aosa.kernels.scoring import batch_format, channel_inner

Score = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Faithfulness:
    """Deletion and insertion curves (steps + 1 scores each), their AUCs and over-all = insertion - deletion."""

    deletion: torch.Tensor
    insertion: torch.Tensor
    deletion_auc: float
    insertion_auc: float
    overall: float

    @classmethod
    def of(cls, deletion: torch.Tensor, insertion: torch.Tensor) -> Faithfulness:
        """Scores of the two curves with their AUCs (however the curves' points were computed)."""
        deletion_auc, insertion_auc = auc(deletion), auc(insertion)
        return cls(deletion, insertion, deletion_auc, insertion_auc, insertion_auc - deletion_auc)


CURVES = ("deletion", "insertion")
STEPS = 28  # steps of each curve (DESIGN.md section 5): steps + 1 scores including the start


def auc(curve: torch.Tensor) -> float:
    """Trapezoidal area under a curve of N + 1 equally spaced scores on [0, 1]: (sum - a0/2 - aN/2) / N."""
    curve = curve.double()
    return float((curve.sum() - curve[0] / 2 - curve[-1] / 2) / (curve.numel() - 1))


def rank_order(saliency: torch.Tensor) -> torch.Tensor:
    """Flat voxel indices by saliency, descending; ties keep raster (flat index) order."""
    return torch.sort(saliency.flatten(), descending=True, stable=True).indices


@torch.no_grad()
def perturbation_curve(score: Score, start: torch.Tensor, end: torch.Tensor, order: torch.Tensor,
                       steps: int = STEPS, batch_size: int = 16, points: torch.Tensor | None = None) -> torch.Tensor:
    """Scores as voxels move from `start` to `end` (C, T, H, W), ceil(THW / steps) per step in `order`: at
    every step 0..steps, or only at `points` (a subset, so a curve can be scored in shards).

    A voxel moves all channels; the step clips are built `batch_size` at a time, in the layout the model runs
    fastest (kernels.scoring.batch_format).
    """
    channels, voxels = start.shape[0], order.numel()
    per_step = math.ceil(voxels / steps)
    rank = torch.empty(voxels, dtype=torch.long, device=start.device)
    rank[order.to(start.device)] = torch.arange(voxels, device=start.device)
    points = torch.arange(steps + 1) if points is None else points
    scores = []
    inner = batch_format(score) == torch.channels_last_3d  # then build (b, THW*C): channel innermost, as in memory
    if inner:
        rank = rank.repeat_interleave(channels)
        start_flat, end_flat = (channel_inner(x).reshape(-1) for x in (start, end))
    else:
        start_flat, end_flat = start.reshape(channels, 1, voxels), end.reshape(channels, 1, voxels)
    for chunk in points.to(start.device).split(batch_size):
        moved = rank < (chunk * per_step)[:, None]  # (b, THW) or (b, THW*C)
        batch = torch.where(moved, end_flat, start_flat)
        batch = (batch.view(-1, *start.shape[1:], channels).movedim(-1, 1) if inner  # (b, C, T, H, W) of either
                 else batch.transpose(0, 1).reshape(-1, *start.shape))
        scores.append(score(batch).detach().cpu())
    return torch.cat(scores) if scores else torch.zeros(0)


def curve_ends(curve: str, clip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a curve starts and ends: deletion from the clip to the `mean` substrate (zero in normalized
    space), insertion from the blurred clip (per frame, kernel 11, sigma 5) to the clip."""
    if curve == "deletion":
        return clip, torch.zeros_like(clip)
    if curve == "insertion":
        return blur_frames(clip), clip
    raise ValueError(f"unknown curve {curve!r}; expected one of {', '.join(CURVES)}")


def curve_points(score: Score, clip: torch.Tensor, saliency: torch.Tensor, curve: str, points: torch.Tensor,
                 steps: int = STEPS, batch_size: int = 16) -> torch.Tensor:
    """Scores of one curve at the step numbers `points` only: one shard of a curve, scored anywhere."""
    start, end = curve_ends(curve, clip)
    return perturbation_curve(score, start, end, rank_order(saliency), steps, batch_size, points)


def deletion_curve(score: Score, clip: torch.Tensor, saliency: torch.Tensor,
                   steps: int = STEPS, batch_size: int = 16) -> torch.Tensor:
    """Scores as the most salient voxels go from the clip to the `mean` substrate (zero in normalized space)."""
    return curve_points(score, clip, saliency, "deletion", torch.arange(steps + 1), steps, batch_size)


def insertion_curve(score: Score, clip: torch.Tensor, saliency: torch.Tensor,
                    steps: int = STEPS, batch_size: int = 16) -> torch.Tensor:
    """Scores as the most salient voxels go from the blurred clip (per frame, kernel 11, sigma 5) to the clip."""
    return curve_points(score, clip, saliency, "insertion", torch.arange(steps + 1), steps, batch_size)


def faithfulness(score: Score, clip: torch.Tensor, saliency: torch.Tensor,
                 steps: int = STEPS, batch_size: int = 16) -> Faithfulness:
    """Deletion and insertion of a (C, T, H, W) clip ranked by a (T, H, W) map; `score` maps batches to (B,)."""
    if saliency.shape != clip.shape[1:]:
        raise ValueError(f"saliency shape {tuple(saliency.shape)} does not match clip (T, H, W) "
                         f"{tuple(clip.shape[1:])}")
    return Faithfulness.of(deletion_curve(score, clip, saliency, steps, batch_size),
                           insertion_curve(score, clip, saliency, steps, batch_size))
