"""SlowFast and X3D built by PyTorchVideo, so their checkpoints (`{"model_state": ...}`) load key for key.

PyTorchVideo is an optional extra (`pip install -e '.[families]'`) and is imported only when one is built.
SlowFast takes [slow, fast] pathways; a forward pre-hook packs them from the engine's one (B, C, T, H, W) clip,
so the module's state dict keeps PyTorchVideo's layout and every explanation method sees a single clip.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn

from engine.errors import ModelError

SLOWFAST_ALPHA = 4  # frame-rate ratio of the fast to the slow pathway in SlowFast 8x8 R50


def pack_pathways(module: nn.Module, args: tuple[Any, ...], alpha: int = SLOWFAST_ALPHA) -> tuple[list[Tensor]]:
    """Forward pre-hook: a (B, C, T, H, W) clip -> ([slow, fast],), slow = T // alpha evenly spaced frames
    (PyTorchVideo's PackPathway, applied on the batch's time axis)."""
    fast = args[0]
    frames = torch.linspace(0, fast.shape[2] - 1, fast.shape[2] // alpha, device=fast.device).long()
    return ([fast.index_select(2, frames), fast],)


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
    """SlowFast 8x8 R50 with random weights, taking the 32-frame fast clip alone (slow frames packed by a hook)."""
    module = _hub_builder("slowfast_r50")(pretrained=False, model_num_class=num_classes)
    module.register_forward_pre_hook(pack_pathways)
    return module


def x3d(name: str, num_classes: int = 400) -> nn.Module:
    """X3D variant `name` ("x3d_xs", "x3d_s", "x3d_m") with random weights."""
    return _hub_builder(name)(pretrained=False, model_num_class=num_classes)
