"""Fill values put into occluded voxels: `mean`, `zero`, `blur` and `conditional` sampling."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aosa.kernels.filters import blur_frames, neighbourhood_stats
from aosa.kernels.space import InputSpace


@dataclass(frozen=True)
class Fill:
    """`expected` is the fill's mean (what AOSA-approx uses); `draws` are the values exact occlusion averages over."""

    expected: torch.Tensor
    draws: tuple[torch.Tensor, ...]


def make_fill(kind: str, clip: torch.Tensor, space: InputSpace, *, samples: int = 1, radius: int = 4,
              seed: int = 0) -> Fill:
    """Fill of `kind` for a (C, T, H, W) clip; tensors broadcast against the clip.

    `mean` is zero in normalized space (the dataset mean colour), `zero` is black, `blur` the
    per-frame Gaussian-blurred clip, `conditional` draws v ~ N(mu, sigma^2) from the neighbouring
    patches (offsets within +-radius), `samples` times, seeded and drawn on the CPU, so every shard and
    every device draws the same values.
    """
    if kind == "mean":
        constant = torch.zeros(clip.shape[0], 1, 1, 1, dtype=clip.dtype, device=clip.device)
        return Fill(constant, (constant,))
    if kind == "zero":
        black = space.black(clip)
        return Fill(black, (black,))
    if kind == "blur":
        blurred = blur_frames(clip)
        return Fill(blurred, (blurred,))
    if kind == "conditional":
        mean, std = neighbourhood_stats(clip, radius)
        generator = torch.Generator().manual_seed(seed)  # drawn on the CPU: every device gets the same values
        draws = tuple(mean + std * torch.randn(clip.shape, generator=generator, dtype=clip.dtype).to(clip.device)
                      for _ in range(samples))
        return Fill(mean, draws)
    raise ValueError(f"unknown fill {kind!r}; expected mean, zero, blur or conditional")
