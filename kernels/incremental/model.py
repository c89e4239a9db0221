"""IncrementalModel: exact logits of occluded clips, recomputing each layer only where a mask changed it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import fx, nn

from kernels.incremental.geometry import (INPUT_REACH, Reach, Tiles, reach_of_merge, reach_through_window, shared,
                                         through_window, tiles_of, union)
from kernels.incremental.ops import trace
from kernels.incremental.patches import WINDOW_BYTES, Activation, occluded_input, to_rows
from kernels.incremental.prefix import Prefix, clean_pass, run_node
from kernels.tubes import TubeSet

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


class IncrementalModel:
    """Built once per clip: traces `module`, runs the clean pass, then maps batches of masks and a fill value to
    the logits (B, classes) the dense model gives on `torch.where(mask, fill, clip)`."""

    def __init__(self, module: nn.Module, clip: torch.Tensor, dense_fraction: float = DENSE_FRACTION,
                 cell: tuple[int, int] = CELL, window_bytes: int = WINDOW_BYTES, plan_bytes: int = PLAN_BYTES) -> None:
        self.module, self.clip, self.dense_fraction, self.cell = module, clip, dense_fraction, cell
        self.plan_bytes = plan_bytes  # patches of a plan's largest layer (see PLAN_BYTES)
        self.window_bytes = window_bytes  # gathered windows held at once per layer (the peak of a batch)
        self.prefix: Prefix = clean_pass(module, trace(module), clip)
        self.local = list(self.prefix.ops)
        self.reach: dict[fx.Node, Reach | None] = {}
        for node in self.local:
            op = self.prefix.ops[node]
            inputs = [self.reach[source] for source in op.inputs]
            self.reach[node] = (INPUT_REACH if op.kind == "input" else inputs[0] if op.kind == "pointwise"
                                else reach_of_merge(inputs) if op.kind == "merge"
                                else None if op.kind == "frames"  # not affine in time: no sharing after it
                                else inputs[0] and reach_through_window(inputs[0], op.window))
        self.frames = {node: op.select(self.prefix.shapes[op.inputs[0]][1]) for node, op in self.prefix.ops.items()
                       if op.kind == "frames"}  # the input frames each frame-selecting node keeps
        position = {node: index for index, node in enumerate(self.local)}
        self.expiry: dict[int, list[fx.Node]] = {}  # position of a node's last local reader -> the node
        for node in self.local:
            last = max((position.get(user, len(self.local)) for user in node.users), default=len(self.local))
            self.expiry.setdefault(last, []).append(node)
        graph = {node: index for index, node in enumerate(self.prefix.nodes)}
        self.dense_expiry: dict[int, list[fx.Node]] = {}  # graph position of a node's last reader -> the node
        for node in self.prefix.nodes:
            self.dense_expiry.setdefault(max((graph[user] for user in node.users), default=0), []).append(node)

    @property
    def clean_logits(self) -> torch.Tensor:
        """Logits (1, classes) of the clean clip."""
        return self.prefix.logits

    @property
    def prefix_fraction(self) -> float:
        """Share of the model's floating-point operations in its local prefix (what incremental runs can cut)."""
        return self.prefix.prefix_flops / max(self.prefix.total_flops, 1)

    def plans(self, tubes: TubeSet, index: torch.Tensor) -> Iterator[tuple[torch.Tensor, Plan]]:
        """(masks, plan) covering `index` in order: all in one plan where its patches fit in `plan_bytes`, else
        split into as many equal plans as the overflow asks for (checked again, down to one mask a plan)."""
        pending = [index]
        while pending:
            chunk = pending.pop(0)
            plan = self.plan(tubes, chunk)
            parts = min(len(chunk), -(-plan.patch_bytes // self.plan_bytes))
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

    @torch.no_grad()
    def logits(self, plan: Plan, value: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Logits (B, classes) of the clip with each planned mask filled with `value` (broadcasts to the clip); the
        layers after the cut run dense `batch_size` masks at a time (all at once by default)."""
        prefix, acts = self.prefix, {}
        value = value.to(self.clip.dtype)
        constant = value.dim() < 4 or value.shape[1:] == (1, 1, 1)
        fill = value.reshape(1, -1) if constant else to_rows(value.expand_as(self.clip))
        for position, node in enumerate(self.local[:plan.cut]):
            op, tiles = prefix.ops[node], plan.tiles[node]
            if op.kind == "input":
                clean = prefix.tables[node].clean
                values = occluded_input(clean, fill, plan.boxes, tiles.computed, prefix.shapes[node][1:])
            elif op.kind == "pointwise":
                source = acts[op.inputs[0]].values
                shared = getattr(op.run, "inplace", False) and len(op.inputs[0].users) > 1
                values = op.run(source.clone() if shared else source)
            elif op.kind == "window":
                values = acts[op.inputs[0]].run_windows(op.run, tiles.computed, op.window, op.pad, prefix.shapes[node][1:],
                                                        self.window_bytes)
            elif op.kind == "frames":
                values = acts[op.inputs[0]].frames(tiles.computed, self.frames[node].to(self.clip.device))
            else:
                values = op.run(*[acts[source].at(tiles) for source in op.inputs])
            acts[node] = Activation(prefix.tables.get(node), tiles, values, plan.count)
            for expired in self.expiry.get(position, ()):
                del acts[expired]  # memory: clean activations plus the patches still to be read
        return self._dense_rest(plan, acts, batch_size or plan.count)

    def _dense_rest(self, plan: Plan, acts: dict[fx.Node, Activation], batch_size: int) -> torch.Tensor:
        """Materialize the local outputs read past the cut (clean broadcast + tiles) and run the rest of the graph,
        `batch_size` masks at a time: a plan may hold more masks than a dense batch should."""
        done = set(self.local[:plan.cut])
        read = [node for node in done if any(user not in done for user in node.users)]
        logits = []
        for start in range(0, plan.count, batch_size):
            masks = slice(start, min(start + batch_size, plan.count))
            env = {node: acts[node].dense(masks) for node in read}
            logits.append(self._suffix(plan.cut, env))
        acts.clear()
        return torch.cat(logits)

    def _suffix(self, cut: int, env: dict[fx.Node, torch.Tensor]) -> torch.Tensor:
        """Run the graph from position `cut` on `env` (the local outputs it reads) to the logits."""
        for position, node in enumerate(self.prefix.nodes[cut:], start=cut):
            if node.op == "output":
                return fx.node.map_arg(node.args[0], env.__getitem__)
            env[node] = run_node(self.module, node, env)
            for expired in self.dense_expiry.get(position, ()):
                env.pop(expired, None)  # memory: like the eager forward, only the values still to be read
        raise AssertionError("the traced graph has no output")
