"""Static incremental plans: a plan's run captured once as a CUDA graph and replayed for every clip whose plan fits.

A plan's shapes come from its geometry: how many tiles each layer computes and reads. Krypton's answer to a
GPU's launch cost is a fixed shape per layer; here each plan is padded to fixed capacities (tiles of a spare mask
that nothing reads), so one captured run serves every clip of a worker whose plan has the same structure (masks,
cut) and fits the capacities. Replaying it copies the clip's clean rows, the plan's
index tensors and the fill into the graph's own buffers and launches the whole plan at once, prefix and dense
rest alike. A plan that does not fit is captured again with capacities grown to hold it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from collections import OrderedDict
from collections.abc import Hashable

import torch

from aosa.kernels.incremental.buffers import BufferPool
from aosa.kernels.incremental.geometry import Tiles
from aosa.kernels.incremental.model import IncrementalModel
from aosa.kernels.incremental.planning import Plan

HEADROOM = 1.1  # capacities are this much over the plan that asks for them, so the next clips' plans mostly fit
BUCKET_STEPS = 8  # capacities are m * 2**k with m in 8..15: at most 12.5% over what was asked for
MAX_GRAPHS = 4  # plan structures kept per worker (each holds a clip's clean rows and a plan's memory)

Capacity = tuple[tuple[int, int], ...]  # (tiles, computed tiles) of each layer that places its own tiles, in order


def bucket(size: int) -> int:
    """The smallest m * 2**k >= size with BUCKET_STEPS <= m < 2 * BUCKET_STEPS (sizes below that stay as they are)."""
    if size <= BUCKET_STEPS:
        return size
    scale = 1 << (size.bit_length() - BUCKET_STEPS.bit_length())
    return -(-size // scale) * scale


def layout(incremental: IncrementalModel, cut: int) -> tuple[int, ...]:
    """For each layer before `cut`, the number of the layer whose tiles it uses among those that place their own: a
    pointwise op uses its input's. It depends on the model alone, so plans whose layers happen to meet the same
    tiles (a residual add on its input's) still have one structure; their static plans hold those tiles twice."""
    position = {node: index for index, node in enumerate(incremental.local)}
    owners: list[int] = []
    for node in incremental.local[:cut]:
        op = incremental.prefix.ops[node]
        owners.append(owners[position[op.inputs[0]]] if op.kind == "pointwise" else position[node])
    numbered = {owner: number for number, owner in enumerate(dict.fromkeys(owners))}
    return tuple(numbered[owner] for owner in owners)


def owned_tiles(plan: Plan, incremental: IncrementalModel, laid: tuple[int, ...]) -> list[Tiles]:
    """The tiles of each layer that places its own, in the order of `layout`."""
    first: dict[int, Tiles] = {}
    for node, number in zip(incremental.local, laid):
        first.setdefault(number, plan.tiles[node])
    return [first[number] for number in range(len(first))]


def sizes(tiles: list[Tiles]) -> Capacity:
    return tuple((len(part.index), len(part.keep)) for part in tiles)


def fits(needed: Capacity, capacity: Capacity) -> bool:
    """Each Tiles fits its capacity with at least one spare computed tile, and room for the spare tiles."""
    return all(computed < held_computed and tiles + held_computed - computed <= held_tiles
               for (tiles, computed), (held_tiles, held_computed) in zip(needed, capacity))


def grown(needed: Capacity, capacity: Capacity | None) -> Capacity:
    """Capacities that fit `needed` with HEADROOM, never below `capacity` (a re-capture only grows)."""
    held = capacity or tuple((0, 0) for _ in needed)
    result = []
    for (tiles, computed), (held_tiles, held_computed) in zip(needed, held):
        computed_room = max(held_computed, bucket(int(HEADROOM * (computed + 1)) + 1))
        result.append((max(held_tiles, bucket(tiles + computed_room - computed)), computed_room))
    return tuple(result)


def pad_tiles(tiles: Tiles, capacity: tuple[int, int], spare: int) -> Tiles:
    """`tiles` grown to `capacity` (tiles, computed) with tiles of mask `spare` at the origin: the extra computed
    ones each in a slot of its own, the rest placed on the first extra slot. Nothing reads the spare mask."""
    held_tiles, held_computed = capacity
    tiles_added, computed_added = held_tiles - len(tiles.index), held_computed - len(tiles.keep)
    device = tiles.index.device
    index = torch.cat([tiles.index, tiles.index.new_tensor([spare, 0, 0, 0]).expand(tiles_added, 4)])
    first = len(tiles.index)
    keep = torch.cat([tiles.keep, torch.arange(first, first + computed_added, device=device)])
    extra = torch.arange(len(tiles.keep), held_computed, device=device)
    slot = torch.cat([tiles.slot, extra, extra[:1].expand(tiles_added - computed_added)])
    return Tiles(index, tiles.size, keep, slot)


def padded(plan: Plan, incremental: IncrementalModel, laid: tuple[int, ...], capacity: Capacity) -> Plan:
    """The plan (of `layout` laid) with every layer's tiles grown to `capacity` and one spare mask of empty boxes
    after its masks: its first `count` logits are the plan's."""
    grown_tiles = [pad_tiles(tiles, held, plan.count)
                   for tiles, held in zip(owned_tiles(plan, incremental, laid), capacity)]
    boxes = torch.cat([plan.boxes, plan.boxes.new_zeros(1, *plan.boxes.shape[1:])])
    return Plan(plan.count, boxes, {node: grown_tiles[number] for node, number in zip(incremental.local, laid)},
                plan.cut, plan.patch_bytes)


class StaticPlan:
    """One plan structure's run on buffers of its own: a copy of a clip's clean rows, the plan's index tensors at
    fixed capacities and the fill. `capture`: recorded once as a CUDA graph and replayed; otherwise (a CPU, or to
    check the path) run again eagerly from the same buffers, which is what a replay computes."""

    def __init__(self, incremental: IncrementalModel, plan: Plan, laid: tuple[int, ...], value: torch.Tensor,
                 batch_size: int | None, capacity: Capacity, capture: bool) -> None:
        """Buffers made from the clip of `incremental` and its `plan`, already padded to `capacity`."""
        self.capacity, self.batch_size, self.capture, self.layout = capacity, batch_size, capture, laid
        self.model = copy.copy(incremental)  # its clean rows are copied below: the clip's own stay its own
        tables = {node: copy.copy(table) for node, table in incremental.prefix.tables.items()}
        for table in tables.values():
            table.rows = table.rows.clone()
        self.model.prefix = dataclasses.replace(incremental.prefix, tables=tables)
        self.model.pool = BufferPool()  # what a captured graph wrote to stays its own
        self.model.graphs = None
        self.model.planner = None  # runs need no planning; it would keep the clip's own rows alive
        self.boxes = plan.boxes.clone()
        self.tiles = [(tiles.index.clone(), tiles.keep.clone(), tiles.slot.clone(), tiles.size)
                      for tiles in owned_tiles(plan, incremental, laid)]
        self.value = value.clone()
        self.count, self.cut, self.patch_bytes = plan.count, plan.cut, plan.patch_bytes
        self.graph: torch.cuda.CUDAGraph | None = None
        self.out: torch.Tensor | None = None

    def _plan(self) -> Plan:
        """A plan over the static buffers, with Tiles made anew so that nothing derived from them (their computed
        tiles) is kept from an earlier run: a graph recomputes it from the buffers on every replay."""
        made = [Tiles(index, size, keep, slot) for index, keep, slot, size in self.tiles]
        local = self.model.local[:self.cut]
        return Plan(self.count, self.boxes, {node: made[self.layout[position]] for position, node in enumerate(local)},
                    self.cut, self.patch_bytes)

    def load(self, incremental: IncrementalModel, plan: Plan, value: torch.Tensor) -> None:
        """Copy the clip's clean rows, its plan (padded to the capacities) and the fill into the static buffers."""
        for node, table in incremental.prefix.tables.items():
            self.model.prefix.tables[node].rows.copy_(table.rows)
        self.boxes.copy_(plan.boxes)
        for (index, keep, slot, _), tiles in zip(self.tiles, owned_tiles(plan, incremental, self.layout)):
            index.copy_(tiles.index)
            keep.copy_(tiles.keep)
            slot.copy_(tiles.slot)
        self.value.copy_(value)

    def run(self) -> torch.Tensor:
        """Logits (count, classes) of the loaded plan: a replay of the captured graph, or an eager run (also where
        the run could not be recorded: a model with an op that waits on the device, say)."""
        if self.capture and self.graph is None:
            try:
                self._capture()
            except RuntimeError as error:
                reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                warnings.warn(f"incremental plan not captured as a CUDA graph, run op by op: {reason[:200]}",
                              stacklevel=2)
                self.capture, self.model.pool = False, BufferPool()
        if not self.capture:
            return self.model.eager_logits(self._plan(), self.value, self.batch_size)
        self.graph.replay()
        return self.out.clone()

    def _capture(self) -> None:
        """Warm up on a side stream (cuDNN picks its kernels), then record the run into a graph whose memory pool
        holds every buffer it writes."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.model.eager_logits(self._plan(), self.value, self.batch_size)
        torch.cuda.current_stream().wait_stream(stream)
        self.model.pool = BufferPool()  # the warm-up's buffers came from the ordinary allocator
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):  # other threads may use the GPU
            self.out = self.model.eager_logits(self._plan(), self.value, self.batch_size)
        self.graph = graph


class PlanGraphs:
    """A worker's static plans, one per plan structure, kept across clips (MAX_GRAPHS, least recently used dropped).
    `capture` None: CUDA graphs for clips on a GPU, the eager path elsewhere; False: static plans replayed eagerly
    on any device (what a graph computes, for checking the path where there is no GPU)."""

    def __init__(self, capture: bool | None = None) -> None:
        self.capture = capture
        self.static: OrderedDict[Hashable, StaticPlan] = OrderedDict()
        self.captures = 0  # static plans made (a capture each on a GPU): replays reuse them
        self.runs = 0
        self.computed = self.held = 0  # tile positions the plans computed, and their static plans at capacity

    def applies(self, clip: torch.Tensor) -> bool:
        return self.capture is False or clip.device.type == "cuda"

    def logits(self, incremental: IncrementalModel, plan: Plan, value: torch.Tensor,
               batch_size: int | None) -> torch.Tensor:
        """Logits (count, classes) of `plan` through its structure's static plan, made or grown where needed."""
        laid = layout(incremental, plan.cut)
        owned = owned_tiles(plan, incremental, laid)
        clip = incremental.clip
        key = (id(incremental.module), tuple(clip.shape), clip.dtype, plan.count, plan.cut, tuple(plan.boxes.shape),
               tuple(value.shape), value.dtype, batch_size)
        static = self.static.pop(key, None)
        needed = sizes(owned)
        if static is None or not fits(needed, static.capacity):
            capacity = grown(needed, static.capacity if static else None)
            static = StaticPlan(incremental, padded(plan, incremental, laid, capacity), laid, value, batch_size,
                                capacity, self.capture is not False)
            self.captures += 1
        else:
            static.load(incremental, padded(plan, incremental, laid, static.capacity), value)
        self.static[key] = static
        while len(self.static) > MAX_GRAPHS:
            self.static.popitem(last=False)
        self.runs += 1
        volumes = [math.prod(tiles.size) for tiles in owned]
        self.computed += sum(volume * computed for volume, (_, computed) in zip(volumes, needed))
        self.held += sum(volume * computed for volume, (_, computed) in zip(volumes, static.capacity))
        return static.run()
