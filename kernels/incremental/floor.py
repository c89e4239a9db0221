"""What incremental occlusion can save on a clip, counted rather than timed: the share of the dense flops that
the plan computes, and the share that recomputing only what changes cannot go below (each local convolution on
exactly the positions a mask changes, everything after the local prefix dense)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from kernels.incremental.model import IncrementalModel
from kernels.incremental.patches import window_padding
from kernels.tubes import TubeSet


@dataclass(frozen=True)
class FlopShares:
    """Flops over the same masks' dense flops: `planned` by the incremental plan, `floor` by the exact changed
    region (pixel bitmaps pushed through each local layer)."""

    planned: float
    floor: float


@torch.no_grad()
def flop_shares(incremental: IncrementalModel, tubes: TubeSet, batch_size: int = 16) -> FlopShares:
    """Count both shares over every mask of `tubes`, one batch of masks at a time (convolutions only: the flops
    FlopCounterMode counts in the prefix)."""
    prefix, module = incremental.prefix, incremental.module
    convs = {node: module.get_submodule(node.target).weight.numel() * 2 for node in incremental.local
             if node.op == "call_module" and isinstance(module.get_submodule(node.target), nn.Conv3d)}
    dense_prefix = sum(flops * _positions(prefix.shapes[node]) for node, flops in convs.items())
    suffix = prefix.total_flops - dense_prefix
    planned = floor = 0.0
    for index in torch.arange(len(tubes)).split(batch_size):
        plan = incremental.plan(tubes, index)
        changed = changed_outputs(incremental, tubes, index)
        for position, node in enumerate(incremental.local):
            if node in convs:
                floor += convs[node] * float(changed[node].sum())
                tiles = plan.tiles[node].area if position < plan.cut else len(index) * _positions(prefix.shapes[node])
                planned += convs[node] * tiles
        planned += suffix * len(index)
        floor += suffix * len(index)
    dense = prefix.total_flops * len(tubes)
    return FlopShares(planned / dense, floor / dense)


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
        elif op.kind == "window":
            source = changed[op.inputs[0]]
            pads = window_padding(op.window, tuple(source.shape[2:]), shape)
            padded = F.pad(source, [side for low, high in reversed(pads) for side in (low, high)])
            pooled = F.max_pool3d(padded, op.window.kernel, op.window.stride, 0, op.window.dilation)
            changed[node] = pooled[:, :, :shape[0], :shape[1], :shape[2]]
        else:
            changed[node] = torch.stack([changed[source] for source in op.inputs]).amax(0)
    return changed
