"""What incremental occlusion saves on a clip, counted rather than timed: the share of the dense flops that the
plan computes, and the share of each mask's exactly changed outputs (each local convolution on exactly the
positions a mask changes, everything after the local prefix dense). Sharing tiles between the masks of a plan
lets the plan go below the second: that one counts every mask on its own."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from aosa.kernels.incremental.model import IncrementalModel
from aosa.kernels.incremental.patches import window_padding
from aosa.kernels.tubes import TubeSet


@dataclass(frozen=True)
class FlopShares:
    """Flops over the same masks' dense flops: `planned` by the incremental plan, `changed` by each mask's exactly
    changed outputs (pixel bitmaps pushed through each local layer), counted per mask."""

    planned: float
    changed: float


@torch.no_grad()
def flop_shares(incremental: IncrementalModel, tubes: TubeSet, batch_size: int = 16) -> FlopShares:
    """Count both shares over every mask of `tubes`: planned as the scorer plans (`incremental.plans`), changed bitmaps `batch_size` masks at a time (convolutions only: the flops FlopCounterMode counts
    in the prefix)."""
    prefix, module = incremental.prefix, incremental.module
    convs = {node: module.get_submodule(node.target).weight.numel() * 2 for node in incremental.local
             if node.op == "call_module" and isinstance(module.get_submodule(node.target), nn.Conv3d)}
    dense_prefix = sum(flops * _positions(prefix.shapes[node]) for node, flops in convs.items())
    suffix = prefix.total_flops - dense_prefix
    masks = torch.arange(len(tubes))
    planned = changed = suffix * len(tubes)
    for index, plan in incremental.plans(tubes, masks):
        for position, node in enumerate(incremental.local):
            if node in convs:
                tiles = plan.tiles[node].area if position < plan.cut else len(index) * _positions(prefix.shapes[node])
                planned += convs[node] * tiles
    for index in masks.split(batch_size):
        bitmaps = changed_outputs(incremental, tubes, index)
        changed += sum(flops * float(bitmaps[node].sum()) for node, flops in convs.items())
    dense = prefix.total_flops * len(tubes)
    return FlopShares(planned / dense, changed / dense)


def _positions(shape: tuple[int, ...]) -> int:
    """Output positions of a (C, T, H, W) activation."""
    return shape[1] * shape[2] * shape[3]


def changed_outputs(incremental: IncrementalModel, tubes: TubeSet,
                    index: torch.Tensor) -> dict[fx.Node, torch.Tensor]:
    """Per local node, a (B, 1, T, H, W) 0/1 map of the outputs that the masks numbered `index` change: a window
    op changes every output whose window reads a changed input (a max pool of the map), a merge the union."""
    prefix, changed = incremental.prefix, {}
    for node in incremental.local:
        op, shape = prefix.ops[node], prefix.shapes[node][1:]
        if op.kind == "input":
            changed[node] = tubes.masks(index).unsqueeze(1).float()
        elif op.kind == "pointwise":
            changed[node] = changed[op.inputs[0]]
        elif op.kind == "frames":
            changed[node] = changed[op.inputs[0]][:, :, incremental.planner.frames[node]]
        elif op.kind == "window":
            source = changed[op.inputs[0]]
            pads = window_padding(op.window, tuple(source.shape[2:]), shape)
            padded = F.pad(source, [side for low, high in reversed(pads) for side in (low, high)])
            pooled = F.max_pool3d(padded, op.window.kernel, op.window.stride, 0, op.window.dilation)
            changed[node] = pooled[:, :, :shape[0], :shape[1], :shape[2]]
        else:
            changed[node] = torch.stack([changed[source] for source in op.inputs]).amax(0)
    return changed
