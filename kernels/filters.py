"""Per-frame image filters on (C, T, H, W) clips."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.transforms.v2.functional import gaussian_blur


def blur_frames(clip: torch.Tensor, kernel: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """Gaussian blur of every frame (kernel 11, sigma 5 by default: the insertion substrate)."""
    channels, frames, height, width = clip.shape
    frames_first = clip.permute(1, 0, 2, 3)  # (T, C, H, W)
    blurred = gaussian_blur(frames_first, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
    return blurred.permute(1, 0, 2, 3).contiguous()


def neighbourhood_stats(clip: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per element mean and std of the values at offsets within +-radius, the element itself excluded.

    This is the mean of the patches shifted by every such offset from an occluded patch (conditional
    sampling); offsets that leave the frame are left out of each element's average.
    """
    channels, frames, height, width = clip.shape
    planes = clip.reshape(channels * frames, 1, height, width)
    side = 2 * radius + 1

    def window_total(x: torch.Tensor) -> torch.Tensor:  # zero-padded box sum, via a (fast) average pool
        return F.avg_pool2d(x, side, stride=1, padding=radius, count_include_pad=True) * side * side

    window_sum = window_total(planes) - planes
    window_sq = window_total(planes * planes) - planes * planes
    count = (window_total(torch.ones_like(planes[:1])) - 1).round().clamp_min(1)
    mean = window_sum / count
    std = (window_sq / count - mean * mean).clamp_min(0).sqrt()
    return mean.reshape(clip.shape), std.reshape(clip.shape)
