"""Planning batches of masks: each local layer's changed boxes and shared tiles, and where the rest runs dense."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import fx

from aosa.kernels.incremental.geometry import Reach, Tiles, reaches, shared, through_window, tiles_of, union
from aosa.kernels.incremental.prefix import Prefix
from aosa.kernels.tubes import TubeSet

DENSE_FRACTION = 0.55  # a layer whose tiles cover more of the batch than this runs dense, with all after it
PLAN_BYTES = 512 * 2 ** 20  # patches of a plan's largest layer: masks planned together share tiles (r3d_18's s=8 AOSA
                            # map fits in one plan), and each adds its tiles' memory
CELL = (2, 4)  # tile (frames, side) at each layer: small enough to follow a mask, large enough for fast convs


@dataclass(frozen=True)
class Plan:
    """Geometry of one batch of masks, on the model's device: input boxes (B, G, T, 4), tiles per local node
    before `cut` (the position in the prefix from which everything runs dense)."""

    count: int
    boxes: torch.Tensor
    tiles: dict[fx.Node, Tiles]
    cut: int
    patch_bytes: int = 0  # patches of its largest incremental layer


Planned = tuple[torch.Tensor, Plan]  # the numbers of a plan's masks, and the plan


class Planner:
    """Plans batches of masks for one clip's traced prefix; geometry depends on boxes alone, planned on the CPU."""

    def __init__(self, prefix: Prefix, clip: torch.Tensor, dense_fraction: float = DENSE_FRACTION,
                 cell: tuple[int, int] = CELL, plan_bytes: int = PLAN_BYTES) -> None:
        self.prefix, self.clip, self.dense_fraction, self.cell = prefix, clip, dense_fraction, cell
        self.plan_bytes = plan_bytes  # patches of a plan's largest layer (see PLAN_BYTES)
        self.local = list(prefix.ops)
        self.reach: dict[fx.Node, Reach | None] = reaches(prefix.ops)
        self.frames = {node: op.select(prefix.shapes[op.inputs[0]][1]) for node, op in prefix.ops.items()
                       if op.kind == "frames"}  # the input frames each frame-selecting node keeps

    def plans(self, tubes: TubeSet, index: torch.Tensor, plan_bytes: int | None = None) -> Iterator[Planned]:
        """(masks, plan) covering `index` in order: all in one plan where its patches fit in `plan_bytes` (default:
        the planner's), else split into as many equal plans as the overflow asks for (checked again, down to one
        mask a plan)."""
        plan_bytes = max(plan_bytes or 0, self.plan_bytes)
        pending = [index]
        while pending:
            chunk = pending.pop(0)
            plan = self.plan(tubes, chunk)
            parts = min(len(chunk), -(-plan.patch_bytes // plan_bytes))
            if parts > 1:
                pending[:0] = list(chunk.tensor_split(parts))
                continue
            yield chunk, plan

    def plan(self, tubes: TubeSet, index: torch.Tensor) -> Plan:
        """Boxes and tiles of every local layer for the masks numbered `index`, moved to the device at once."""
        ids = tubes.groups.cpu()[index.cpu()]
        boxes = tubes.boxes.cpu()[ids]
        geometry: dict[fx.Node, torch.Tensor] = {}
        tiles: dict[fx.Node, Tiles] = {}
        cut = len(self.local)
        for position, node in enumerate(self.local):
            geometry[node], tiles[node] = self._layer(node, boxes, ids, geometry, tiles)
            shape = self.prefix.shapes[node]
            if position and tiles[node].area > self.dense_fraction * len(boxes) * shape[1] * shape[2] * shape[3]:
                cut = position
                break
        patch_bytes = max((tiles[node].area * self.prefix.shapes[node][0] for node in self.local[:cut]), default=0)
        return self._to_device(Plan(len(boxes), boxes, tiles, cut, patch_bytes * self.clip.element_size()))

    def _layer(self, node: fx.Node, boxes: torch.Tensor, ids: torch.Tensor, geometry: dict[fx.Node, torch.Tensor],
               tiles: dict[fx.Node, Tiles]) -> tuple[torch.Tensor, Tiles]:
        """Changed boxes and shared tiles of one local node from those of its inputs."""
        op, shape = self.prefix.ops[node], self.prefix.shapes[node][1:]
        if op.kind == "pointwise":
            return geometry[op.inputs[0]], tiles[op.inputs[0]]
        if op.kind == "input":
            changed = boxes
        elif op.kind == "window":
            changed = through_window(geometry[op.inputs[0]], op.window, shape)
        elif op.kind == "frames":
            changed = geometry[op.inputs[0]][:, :, self.frames[node]]
        else:
            changed = union([geometry[source] for source in op.inputs])
        placed = tiles_of(changed, shape, self.cell)
        laid = shared(placed, self.reach[node], boxes, ids)
        for source in op.inputs:  # an add whose tiles and sharing are an input's reads that input's values as they are
            other = tiles[source]
            if (torch.equal(other.index, laid.index) and other.size == laid.size
                    and torch.equal(other.slot, laid.slot)):
                return changed, other
        return changed, laid

    def _to_device(self, plan: Plan) -> Plan:
        """The plan's index tensors moved to the clip's device in one transfer."""
        distinct = {id(tiles): tiles for tiles in plan.tiles.values()}
        parts = [plan.boxes.flatten()] + [part for tiles in distinct.values()
                                          for part in (tiles.index.flatten(), tiles.keep, tiles.slot)]
        moved = torch.cat(parts).to(self.clip.device).split([part.numel() for part in parts])
        boxes = moved[0].view(plan.boxes.shape)
        placed = {key: Tiles(index.view(-1, 4), tiles.size, keep, slot) for (key, tiles), index, keep, slot in
                  zip(distinct.items(), moved[1::3], moved[2::3], moved[3::3])}
        return Plan(plan.count, boxes, {node: placed[id(tiles)] for node, tiles in plan.tiles.items()}, plan.cut,
                    plan.patch_bytes)

