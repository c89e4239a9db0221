"""IncrementalModel: exact logits of occluded clips, recomputing each layer only where a mask changed it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Protocol

import torch
from torch import fx, nn

from aosa.kernels.incremental.buffers import BufferPool
from aosa.kernels.incremental.geometry import Tiles
from aosa.kernels.incremental.ops import LocalOp, trace
from aosa.kernels.incremental.patches import WINDOW_BYTES, Activation, occluded_input, to_rows
from aosa.kernels.incremental.planning import CELL, DENSE_FRACTION, PLAN_BYTES, Plan, Planned, Planner
from aosa.kernels.incremental.prefix import Prefix, clean_pass, run_node
from aosa.kernels.tubes import TubeSet

RUN_LABEL = "aosa:incremental_run"


class PlanRunner(Protocol):
    """What runs a model's plans in its stead where it is given one (graphs.PlanGraphs: CUDA graphs)."""

    def applies(self, clip: torch.Tensor) -> bool: ...

    def logits(self, incremental: IncrementalModel, plan: Plan, value: torch.Tensor,
               batch_size: int | None) -> torch.Tensor: ...


class IncrementalModel:
    """Built once per clip: traces `module`, runs the clean pass, then maps batches of masks and a fill value to
    the logits (B, classes) the dense model gives on `torch.where(mask, fill, clip)`. Its scratch memory comes from
    `pool`: pass the same pool for every clip a worker scores, so only the first pays for fresh memory."""

    def __init__(self, module: nn.Module, clip: torch.Tensor, dense_fraction: float = DENSE_FRACTION,
                 cell: tuple[int, int] = CELL, window_bytes: int = WINDOW_BYTES, plan_bytes: int = PLAN_BYTES,
                 pool: BufferPool | None = None, graphs: PlanRunner | None = None) -> None:
        self.module, self.clip = module, clip
        self.window_bytes = window_bytes  # gathered windows held at once per layer (the peak of a batch)
        self.pool = pool or BufferPool()  # patch tables, windows, int maps: warm across layers, plans, draws, clips
        self.graphs = graphs if graphs is not None and graphs.applies(clip) else None  # static plans (CUDA graphs)
        self.prefix: Prefix = clean_pass(module, trace(module), clip, cell)
        self.local = list(self.prefix.ops)
        self.planner = Planner(self.prefix, clip, dense_fraction, cell, plan_bytes)
        self.frames = {node: kept.to(clip.device) for node, kept in self.planner.frames.items()}  # no copy in a run
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

    @property
    def clip_bytes(self) -> int:
        """Bytes of one clip's largest local activation: what one clip of a dense batch holds at its widest layer."""
        return max(math.prod(shape) for shape in self.prefix.shapes.values()) * self.clip.element_size()

    def plans(self, tubes: TubeSet, index: torch.Tensor, batch_size: int | None = None) -> Iterator[Planned]:
        """(masks, plan) covering `index` in order, each plan as large as its patch memory allows: PLAN_BYTES, or
        as much as a dense batch of `batch_size` clips would hold, whichever is more (one knob for both paths)."""
        return self.planner.plans(tubes, index, (batch_size or 0) * self.clip_bytes)

    def logits(self, plan: Plan, value: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """Logits (B, classes) of the clip with each planned mask filled with `value` (broadcasts to the clip); the
        layers after the cut run dense `batch_size` masks at a time (all at once by default). Through the worker's
        static plans where it keeps them (a CUDA graph per plan structure), else eagerly."""
        if self.graphs is not None:
            return self.graphs.logits(self, plan, value, batch_size)
        return self.eager_logits(plan, value, batch_size)

    @torch.no_grad()
    def eager_logits(self, plan: Plan, value: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """`logits` run op by op. Every shape in it comes from the plan's tensors and the model, and nothing in it
        waits on the device, so a CUDA graph can record it (graphs.StaticPlan). A plan may carry spare masks after
        its `count` (boxes has more rows): their tiles are computed and never read."""
        with torch.profiler.record_function(RUN_LABEL):  # what a profile counts as the plan's run (jobs.benchmark)
            return self._run(plan, value, batch_size)

    def _run(self, plan: Plan, value: torch.Tensor, batch_size: int | None) -> torch.Tensor:
        prefix, acts = self.prefix, {}
        batch_size = batch_size or plan.count
        window_bytes = max(self.window_bytes, batch_size * self.clip_bytes)  # as much as a dense batch would hold
        value = value.to(self.clip.dtype)
        constant = value.dim() < 4 or value.shape[1:] == (1, 1, 1)
        fill = value.reshape(1, -1) if constant else to_rows(value.expand_as(self.clip))
        for position, node in enumerate(self.local[:plan.cut]):
            op, tiles = prefix.ops[node], plan.tiles[node]
            if op.kind == "input":
                values = occluded_input(prefix.tables[node], fill, plan.boxes, tiles.computed)
            elif op.kind == "pointwise":
                values = _pointwise(op, acts)
            elif op.kind == "window":
                values = acts[op.inputs[0]].run_windows(op.run, tiles.computed, op.window, op.pad)
            elif op.kind == "frames":
                values = acts[op.inputs[0]].frames(tiles.computed, self.frames[node])
            else:
                values = _merge(op, tiles, acts)
            acts[node] = Activation(prefix.tables.get(node), tiles, values, len(plan.boxes), self.pool, window_bytes)
            for expired in self.expiry.get(position, ()):
                del acts[expired]  # memory: clean activations plus the patches still to be read
        return self._dense_rest(plan, acts, batch_size)

    def _dense_rest(self, plan: Plan, acts: dict[fx.Node, Activation], batch_size: int) -> torch.Tensor:
        """Materialize the local outputs read past the cut (clean broadcast + tiles) and run the rest of the graph,
        `batch_size` masks at a time: a plan may hold more masks than a dense batch should."""
        done = set(self.local[:plan.cut])
        read = [node for node in done if any(user not in done for user in node.users)]
        logits = []
        for start in range(0, plan.count, batch_size):
            masks = slice(start, min(start + batch_size, plan.count))
            env = {node: acts[node].dense(masks.start, masks.stop) for node in read}
            logits.append(self._suffix(plan.cut, env).clone())  # not a view of pooled memory the next batch reuses
            env.clear()
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


def _pointwise(op: LocalOp, acts: dict[fx.Node, Activation]) -> torch.Tensor:
    """A pointwise op on its input's patches: in place where nothing else reads them, else into new ones. A
    module that writes into its input itself (ReLU(inplace=True)) does so, on a copy where something else may
    read them."""
    source = op.inputs[0]
    values = acts[source].values
    if getattr(op.run, "inplace", False):
        return op.run(values if _exclusive(source, acts) else values.clone())
    if op.inplace is not None and _exclusive(source, acts):
        return op.inplace(values)
    return op.run(values)


def _merge(op: LocalOp, tiles: Tiles, acts: dict[fx.Node, Activation]) -> torch.Tensor:
    """An add or concat on the merge's tiles; an add writes into its first input's patches where nothing else
    reads them (a residual add: no new patch memory)."""
    first = op.inputs[0]
    parts = [acts[source].at(tiles) for source in op.inputs]
    own = parts[0] is acts[first].values
    if op.inplace is not None and (not own or _exclusive(first, acts)):
        return op.inplace(*parts)
    return op.run(*parts)


def _exclusive(node: fx.Node, acts: dict[fx.Node, Activation]) -> bool:
    """Only `node`'s one reader will read its patches (no other live activation shares their memory), so that
    reader may write into them."""
    if len(node.users) != 1:
        return False
    memory = acts[node].values.untyped_storage().data_ptr()
    return not any(other is not node and act.values.untyped_storage().data_ptr() == memory
                   for other, act in acts.items())
