"""Where a mask changes each layer's output: boxes per (mask, tube, frame), and the fixed-size tiles covering them.

Boxes are int64 [y0, y1, x0, x1) rows shaped (B, G, T, 4), empty as [0, 0, 0, 0]. Each tube keeps its own
box through the layers (a temporal kernel takes the bounding box of the tube over its frames), so far-apart
tubes of one mask stay apart; tiles are the cells of a fixed grid that the boxes meet, so boxes that overlap
merge into shared cells and nothing is computed twice.
Masks of a batch share tiles too: a tile's values depend only on the occluded input in its receptive field,
so two masks whose tubes meet that field identically (AOSA's masks share tubes: a tube is in its own mask and
in those that chose it as a partner) compute the tile once.
Geometry depends on boxes alone, never on data: it is planned on the CPU once per batch of masks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import fx

from aosa.kernels.incremental.ops import LocalOp, Window

FAR = 1 << 40  # beyond any coordinate


@dataclass(frozen=True)
class Tiles:
    """`index` (P, 4) int64 rows (mask, t0, y0, x0) of P tiles of `size` (t, h, w) at one layer's resolution.
    Shared tiles: `keep` (U,) the tiles that are computed, `slot` (P,) which of those holds each tile's values."""

    index: torch.Tensor
    size: tuple[int, int, int]
    keep: torch.Tensor | None = None
    slot: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.keep is None:  # unshared: every tile is computed, into its own slot
            every = torch.arange(len(self.index), device=self.index.device)
            object.__setattr__(self, "keep", every)
            object.__setattr__(self, "slot", every)

    @cached_property
    def computed(self) -> Tiles:
        """The tiles whose values are computed, in slot order."""
        return Tiles(self.index[self.keep], self.size)

    @property
    def area(self) -> int:
        """Positions computed: what the layer costs."""
        return self.keep.shape[0] * self.size[0] * self.size[1] * self.size[2]


@dataclass(frozen=True)
class Reach:
    """Per axis (T, H, W): outputs [a, b) of a node read the model's input on [a * scale - low, (b-1) * scale +
    high + 1), over every path from the input (the receptive field, for any tile)."""

    scale: tuple[int, int, int]
    low: tuple[int, int, int]
    high: tuple[int, int, int]


INPUT_REACH = Reach((1, 1, 1), (0, 0, 0), (0, 0, 0))


def reach_through_window(reach: Reach, window: Window) -> Reach:
    """The reach of a conv/pool's output from its input's."""
    return Reach(tuple(s * scale for s, scale in zip(window.stride, reach.scale)),
                 tuple(p * scale + low for p, scale, low in zip(window.padding, reach.scale, reach.low)),
                 tuple(((k - 1) * d - p) * scale + high for k, d, p, scale, high in
                       zip(window.kernel, window.dilation, window.padding, reach.scale, reach.high)))


def reach_of_merge(parts: list[Reach | None]) -> Reach | None:
    """The reach of an add/concat: the widest of its inputs'; None (no sharing) where their scales differ."""
    if any(part is None for part in parts) or len({part.scale for part in parts}) != 1:
        return None
    return Reach(parts[0].scale, tuple(map(max, *(part.low for part in parts))),
                 tuple(map(max, *(part.high for part in parts))))


def unique_rows(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.unique(rows, dim=0, return_inverse=True) for int64 rows, through one packed int64 per row where the
    columns' ranges fit in 62 bits (a 1-D sort instead of row-by-row comparisons)."""
    low = rows.amin(0) if len(rows) else rows.new_zeros(rows.shape[1])
    spans = (rows.amax(0) - low + 1).tolist() if len(rows) else [1] * rows.shape[1]
    if math.prod(spans) >= 1 << 62:
        return torch.unique(rows, dim=0, return_inverse=True)
    packed = torch.zeros(len(rows), dtype=torch.int64)
    for column, span in zip((rows - low).unbind(1), spans):
        packed = packed * span + column
    values, inverse = torch.unique(packed, return_inverse=True)
    return values, inverse


def reaches(ops: dict[fx.Node, LocalOp]) -> dict[fx.Node, Reach | None]:
    """The reach of every local node (in graph order); None after a frame selection, which is not affine in time
    (its tiles and all that depend on them are not shared)."""
    reach: dict[fx.Node, Reach | None] = {}
    for node, op in ops.items():
        inputs = [reach[source] for source in op.inputs]
        reach[node] = (INPUT_REACH if op.kind == "input" else inputs[0] if op.kind == "pointwise"
                       else reach_of_merge(inputs) if op.kind == "merge" else None if op.kind == "frames"
                       else inputs[0] and reach_through_window(inputs[0], op.window))
    return reach


def shared(tiles: Tiles, reach: Reach | None, boxes: torch.Tensor, tubes: torch.Tensor, chunk: int = 1 << 18) -> Tiles:
    """`tiles` with sharing: tiles at one place whose receptive fields meet the same tubes (ids `tubes` (B, G),
    boxes (B, G, T, 4) of the input) compute once. Exact for one fill per batch: a tile's values are a function
    of the occluded input in its receptive field, which is the clip with the tubes that meet the field filled."""
    if reach is None or not len(tiles.index):
        return Tiles(tiles.index, tiles.size)
    # A field's extent on each axis depends on the tile's origin on that axis alone: test each box once per origin.
    overlaps = []
    for axis in range(3):
        origin = torch.arange(int(tiles.index[:, 1 + axis].max()) + 1)
        low = origin * reach.scale[axis] - reach.low[axis]
        high = (origin + tiles.size[axis] - 1) * reach.scale[axis] + reach.high[axis] + 1
        overlaps.append((low, high))
    frames = torch.arange(boxes.shape[2])
    in_frames = (frames >= overlaps[0][0][:, None]) & (frames < overlaps[0][1][:, None])  # (t0, T)
    alive = present(boxes).unsqueeze(-1)
    in_rows = alive & (boxes[..., 0:1] < overlaps[1][1]) & (boxes[..., 1:2] > overlaps[1][0])  # (B, G, T, y0)
    in_cols = alive & (boxes[..., 2:3] < overlaps[2][1]) & (boxes[..., 3:4] > overlaps[2][0])  # (B, G, T, x0)
    keys = []
    for part in tiles.index.split(chunk):
        mask, t0, y0, x0 = part.unbind(1)
        meets = (in_frames[t0][:, None] & in_rows[mask, :, :, y0] & in_cols[mask, :, :, x0]).any(-1)  # (p, G)
        met = torch.where(meets, tubes[mask], -1).sort(dim=1).values
        repeated = torch.cat([torch.zeros_like(met[:, :1], dtype=torch.bool), met[:, 1:] == met[:, :-1]], dim=1)
        met = torch.where(repeated, -1, met).sort(dim=1).values  # a set: a tube listed twice is met once
        keys.append(torch.cat([part[:, 1:], met], dim=1))
    _, slot = unique_rows(torch.cat(keys))
    count = int(slot.max()) + 1
    first = torch.full((count,), len(slot), dtype=torch.int64).scatter_reduce(
        0, slot, torch.arange(len(slot)), "amin")
    order = torch.argsort(first)  # computed tiles in the order of their first use: batch order, as before
    rank = torch.empty_like(order)
    rank[order] = torch.arange(count)
    return Tiles(tiles.index, tiles.size, first[order], rank[slot])


def present(boxes: torch.Tensor) -> torch.Tensor:
    """(...) bool: the box is non-empty."""
    return (boxes[..., 0] < boxes[..., 1]) & (boxes[..., 2] < boxes[..., 3])


def bounding(boxes: torch.Tensor, alive: torch.Tensor, dim: int) -> torch.Tensor:
    """Bounding box over `dim` of the boxes where `alive`, empty where none is."""
    keep = alive.unsqueeze(-1)
    low = torch.where(keep, boxes, FAR)[..., 0::2].amin(dim)
    high = torch.where(keep, boxes, -FAR)[..., 1::2].amax(dim)
    box = torch.stack([low[..., 0], high[..., 0], low[..., 1], high[..., 1]], dim=-1)
    return torch.where(alive.any(dim).unsqueeze(-1), box, 0)


def _span(low: torch.Tensor, high: torch.Tensor, kernel: int, stride: int, padding: int, dilation: int,
          size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output positions [start, stop) whose window (o * stride - padding + i * dilation) reads any of [low, high)."""
    start = -torch.div(-(low + padding - (kernel - 1) * dilation), stride, rounding_mode="floor")
    stop = torch.div(high - 1 + padding, stride, rounding_mode="floor") + 1
    return start.clamp(0, size), stop.clamp(0, size)


def through_window(boxes: torch.Tensor, window: Window, out_shape: tuple[int, int, int]) -> torch.Tensor:
    """Changed boxes (B, G, T', 4) of a conv/pool output from its input's (B, G, T, 4)."""
    frames_out, height, width = out_shape
    (kt, ky, kx), (st, sy, sx), (pt, py, px), (dt, dy, dx) = (window.kernel, window.stride, window.padding,
                                                              window.dilation)
    y0, y1 = _span(boxes[..., 0], boxes[..., 1], ky, sy, py, dy, height)
    x0, x1 = _span(boxes[..., 2], boxes[..., 3], kx, sx, px, dx, width)
    mapped = torch.stack([y0, y1, x0, x1], dim=-1)
    alive = present(boxes) & present(mapped)
    frames_in = boxes.shape[2]
    frames = torch.arange(frames_out)[:, None] * st - pt + torch.arange(kt) * dt  # (T', kt)
    inside = (frames >= 0) & (frames < frames_in)
    frames = frames.clamp(0, frames_in - 1)
    return bounding(mapped[:, :, frames], alive[:, :, frames] & inside, dim=3)


def union(parts: list[torch.Tensor]) -> torch.Tensor:
    """Per-tube bounding box of several inputs' boxes (a residual add or a channel concat)."""
    stacked = torch.stack(parts)
    return bounding(stacked, present(stacked), dim=0)


def tile_size(shape: tuple[int, int, int], cell: tuple[int, int]) -> tuple[int, int, int]:
    """The tile (t, h, w) of a layer of `shape` (T, H, W): `cell` = (frames, px), no larger than the layer."""
    return min(cell[0], shape[0]), min(cell[1], shape[1]), min(cell[1], shape[2])


def tiles_of(boxes: torch.Tensor, shape: tuple[int, int, int], cell: tuple[int, int]) -> Tiles:
    """Tiles covering the boxes at a layer of `shape` (T, H, W): the cells of a fixed grid (`cell` = (frames, px);
    the last cell of each axis shifted inward) that meet a box of the mask in one of their frames. Overlapping
    boxes of a mask share cells, so no position is computed twice, and far-apart boxes stay apart."""
    size = tile_size(shape, cell)
    starts = [(torch.arange(-(-extent // step)) * step).clamp(max=extent - step) for extent, step in zip(shape, size)]
    alive = present(boxes).unsqueeze(-1)
    in_rows = alive & (boxes[..., 0:1] < starts[1] + size[1]) & (boxes[..., 1:2] > starts[1])  # (B, G, T, rows)
    in_cols = alive & (boxes[..., 2:3] < starts[2] + size[2]) & (boxes[..., 3:4] > starts[2])
    hit = torch.zeros(*in_rows.shape[:1], *in_rows.shape[2:], in_cols.shape[-1], dtype=torch.bool)
    for rows, cols in zip(in_rows.unbind(1), in_cols.unbind(1)):  # one tube at a time: no (B, G, T, ...) map
        hit |= rows.unsqueeze(-1) & cols.unsqueeze(-2)  # (B, T, rows, cols)
    hit = hit[:, starts[0][:, None] + torch.arange(size[0])].any(2)  # (B, frame cells, rows, cols)
    mask, frame, row, col = hit.nonzero(as_tuple=True)
    return Tiles(torch.stack([mask, starts[0][frame], starts[1][row], starts[2][col]], dim=1), size)
