"""AOSA: occlusion with tubes that follow the optical flow, integrated with co-occurring tubes."""

from __future__ import annotations

import torch

from aosa.kernels.anchors import grid_anchors
from aosa.kernels.cooccurrence import cooccurrence_groups
from aosa.kernels.methods.occlusion_base import OcclusionMethod
from aosa.kernels.tracks import track_points
from aosa.kernels.tubes import TubeSet, tube_boxes
from aosa.schemas.method_params import MethodParams


def adaptive_tubes(flow: torch.Tensor, params: MethodParams) -> TubeSet:
    """Anchors every `stride` px, tracked through `flow`, boxed by `mask`, grouped with top-K partners."""
    _, height, width, _ = flow.shape
    anchors = grid_anchors(height, width, params.stride)
    tracks, alive = track_points(anchors, flow.detach().float().cpu())
    boxes = tube_boxes(tracks, alive, params.mask, height, width)
    return TubeSet(boxes, cooccurrence_groups(tracks, params.top_k), height, width)


class AOSA(OcclusionMethod):
    """Exact AOSA: N = number of anchors forward passes (times the fill's draws)."""

    name = "aosa"
    needs_flow = True

    @classmethod
    def tubes(cls, params: MethodParams, inputs: torch.Tensor, flow: torch.Tensor | None) -> TubeSet:
        return adaptive_tubes(cls.require_flow(flow), params)
