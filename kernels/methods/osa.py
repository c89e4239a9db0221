"""OSA: the 3D extension of occlusion sensitivity, a fixed cuboid slid over the clip."""

from __future__ import annotations

import math

import torch

from aosa.kernels.methods.occlusion_base import OcclusionMethod
from aosa.kernels.tubes import TubeSet, cuboid_tubes
from aosa.schemas.method_params import MethodParams


def osa_window(frames: int, height: int, width: int) -> tuple[int, int, int]:
    """Cuboid of T/2 frames and a square side of round(sqrt(2% of the frame area)) (16 at 112 x 112)."""
    side = max(1, round(math.sqrt(0.02 * height * width)))
    return max(1, frames // 2), min(side, height), min(side, width)


class OSA(OcclusionMethod):
    """One forward pass per cuboid position; stride is half the window (integer division)."""

    name = "osa"

    @classmethod
    def tubes(cls, params: MethodParams, inputs: torch.Tensor, flow: torch.Tensor | None) -> TubeSet:
        _, frames, height, width = inputs.shape
        window = osa_window(frames, height, width)
        stride = tuple(max(1, w // 2) for w in window)
        return cuboid_tubes(frames, height, width, window, stride)
