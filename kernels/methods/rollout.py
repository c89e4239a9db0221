"""Attention Rollout (Abnar & Zuidema 2020) for divided space-time transformers such as TimeSformer.

Each attention sublayer with its residual is 0.5 (A + I), A averaged over heads. In a layer the temporal sublayer
mixes patch (t, p) over the frames t' of the same p (CLS unchanged); the spatial one then mixes, per frame t, the
CLS token and the patches of frame t, and the new CLS is the mean over frames of the per-frame CLS outputs (as in
Hugging Face's TimesformerLayer). Rollout multiplies these matrices; only the final CLS row is needed, so it is
rolled back as a vector, O(L (T P^2 + P T^2)), never forming the (1 + T P)^2 matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aosa.kernels.methods.base import ExplanationMethod
from aosa.kernels.methods.gradients import module_of

NEEDS_TRANSFORMER = ("attention rollout needs a divided space-time transformer (e.g. a TimeSformer directory): "
                     "a module with divided_attentions(batch)")


def divided_rollout(attentions: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
    """Relevance (B, T, P) of every patch to the final CLS token, from per-layer (first to last) head-averaged,
    row-stochastic attentions: temporal (B, P, T, T) and spatial (B, T, 1+P, 1+P), token 0 the CLS token."""
    if not attentions:
        raise ValueError("attention rollout needs at least one layer's attentions")
    count, patches, frames = attentions[-1][0].shape[:3]
    cls = attentions[-1][0].new_ones(count)  # relevance of the CLS token entering the layer being rolled back
    relevance = attentions[-1][0].new_zeros(count, frames, patches)
    for temporal, spatial in reversed(attentions):
        per_frame = torch.cat([(cls / frames)[:, None, None].expand(count, frames, 1), relevance], dim=2)
        mixed = torch.einsum("bti,btij->btj", per_frame, spatial)  # each frame's CLS copy gets 1/T of the CLS's
        cls = 0.5 * cls + 0.5 * mixed[:, :, 0].sum(dim=1)
        relevance = 0.5 * relevance + 0.5 * mixed[:, :, 1:]
        relevance = 0.5 * relevance + 0.5 * torch.einsum("btp,bpts->bsp", relevance, temporal)
    return relevance


class AttentionRollout(ExplanationMethod):
    """Rollout of the final CLS token's attention over the clip's patches, upsampled bilinearly per frame to (H, W).

    Class-agnostic, as in the original method: `target` is ignored.
    """

    name = "rollout"

    def attribute(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None = None) -> torch.Tensor:
        frames, height, width = inputs.shape[1:]
        attentions = self._transformer().divided_attentions(inputs.detach().unsqueeze(0))
        relevance = divided_rollout(attentions)[0]
        if relevance.shape[0] != frames:
            raise ValueError(f"the transformer attends over {relevance.shape[0]} frames; the clip has {frames}")
        rows, cols = _patch_grid(relevance.shape[1], height, width)
        grid = relevance.float().reshape(frames, 1, rows, cols)
        return F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)[:, 0].to(inputs.device)

    def _transformer(self) -> nn.Module:
        """The model's module, which must expose divided_attentions."""
        try:
            module = module_of(self.model)
        except ValueError:
            raise ValueError(NEEDS_TRANSFORMER) from None
        if not callable(getattr(module, "divided_attentions", None)):
            raise ValueError(f"{NEEDS_TRANSFORMER}; {type(module).__name__} has none")
        return module


def _patch_grid(patches: int, height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of P patches tiling an H x W frame: the grid has the frame's aspect ratio."""
    rows = round(math.sqrt(patches * height / width))
    if rows < 1 or rows * (patches // rows) != patches:
        raise ValueError(f"{patches} patches do not tile a {height}x{width} frame as a grid")
    return rows, patches // rows
