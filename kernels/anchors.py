"""Anchor points: centres of a regular grid in the first frame."""

from __future__ import annotations

import torch

from aosa.schemas.method_params import ParamsError


def grid_anchors(height: int, width: int, stride: int) -> torch.Tensor:
    """Grid centres every `stride` pixels starting at stride // 2, as (N, 2) float (x, y), row-major.

    For 112 x 112 and stride 8 this is 14 x 14 = 196 anchors at 4, 12, ..., 108.
    """
    if stride // 2 >= min(height, width):
        raise ParamsError(f"stride {stride} leaves no anchor in a {width}x{height} frame (the first anchor sits at "
                          f"stride // 2 = {stride // 2}); use a stride below {2 * min(height, width)}")
    ys = torch.arange(stride // 2, height, stride, dtype=torch.float32)
    xs = torch.arange(stride // 2, width, stride, dtype=torch.float32)
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=1)
