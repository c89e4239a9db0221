"""SlowFast and X3D built by PyTorchVideo, so their checkpoints (`{"model_state": ...}`) load key for key.

PyTorchVideo is an optional extra (`pip install -e '.[families]'`) and is imported only when one is built.
SlowFast takes [slow, fast] pathways; SlowFastClip selects the slow frames from the engine's one (B, C, T, H, W)
clip inside the model, with PyTorchVideo's state dict layout, so every explanation method sees a single clip and
incremental occlusion can trace it (the frame selection is a module of its own).
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch
from torch import Tensor, nn

from aosa.engine.errors import ModelError

SLOWFAST_ALPHA = 4  # frame-rate ratio of the fast to the slow pathway in SlowFast 8x8 R50


class SlowFrames(nn.Module):
    """The slow pathway's input: T // alpha evenly spaced frames of the clip (PyTorchVideo's PackPathway)."""

    def __init__(self, alpha: int = SLOWFAST_ALPHA) -> None:
        super().__init__()
        self.alpha = alpha

    def frame_index(self, frames: int, device: torch.device | str | None = None) -> Tensor:
        """Indices of the kept frames of a clip of `frames` frames."""
        return torch.linspace(0, frames - 1, frames // self.alpha, device=device).long()

    def forward(self, clip: Tensor) -> Tensor:
        return clip.index_select(2, self.frame_index(clip.shape[2], clip.device))


class SlowFastClip(nn.Module):
    """PyTorchVideo's SlowFast Net called on one clip: [slow frames, clip] through its `blocks` (the same state
    dict keys as the Net it wraps)."""

    def __init__(self, blocks: nn.ModuleList, alpha: int = SLOWFAST_ALPHA) -> None:
        super().__init__()
        self.slow_frames = SlowFrames(alpha)
        self.blocks = blocks

    def forward(self, clip: Tensor) -> Tensor:
        x = [self.slow_frames(clip), clip]
        for block in self.blocks:
            x = block(x)
        return x


def _hub_builder(name: str) -> Callable[..., nn.Module]:
    """PyTorchVideo's hub builder `name` (architecture only, never its download), imported on first use."""
    try:
        with warnings.catch_warnings():  # pytorchvideo's import scripts functions through a deprecated torch.jit
            warnings.simplefilter("ignore", FutureWarning)
            from pytorchvideo.models import hub
    except ImportError:
        raise ModelError(f"pytorchvideo:{name} needs the pytorchvideo package: pip install -e '.[families]'") from None
    return getattr(hub, name)


def slowfast_r50(num_classes: int = 400) -> nn.Module:
    """SlowFast 8x8 R50 with random weights, taking the 32-frame fast clip alone (SlowFastClip)."""
    return SlowFastClip(_hub_builder("slowfast_r50")(pretrained=False, model_num_class=num_classes).blocks)


def x3d(name: str, num_classes: int = 400) -> nn.Module:
    """X3D variant `name` ("x3d_xs", "x3d_s", "x3d_m") with random weights."""
    return _hub_builder(name)(pretrained=False, model_num_class=num_classes)
