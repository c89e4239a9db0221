"""The data path: a layer's activation for a batch of masks as its clean rows plus each mask's changed tiles.

Activations are kept channels-last and flat, one row of C values per position, in one row table per batch
[clean cells | zero block | -inf block | tile rows]. The clean rows are laid out cell by cell on the layer's tile
grid, as tile rows are, so the row of any position is the base of its cell's block (the mask's tile there, or the
clean cell) plus its offset in the cell: "the clean activation overlaid with mask b's tiles" is one lookup in a
(masks, cells) map of bases and one add (Activation.rows_at), and every window a layer reads is one index_select.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from aosa.kernels.incremental.buffers import BufferPool
from aosa.kernels.incremental.geometry import Tiles
from aosa.kernels.incremental.ops import UNIT, Window

WINDOW_BYTES = 64 * 2 ** 20  # gathered windows held at once per layer: bounds the peak, big enough for fast convs
LOOKUP_BYTES = 16  # int32 row lookups alive per gathered position while rows_at runs (counted in the window budget)


def to_rows(activation: torch.Tensor) -> torch.Tensor:
    """(C, T, H, W) -> (T*H*W, C), a fresh channels-last copy."""
    channels = activation.shape[0]
    return torch.empty(activation[0].numel(), channels, dtype=activation.dtype,
                       device=activation.device).copy_(activation.permute(1, 2, 3, 0).reshape(-1, channels))


@dataclass(frozen=True)
class Axis:
    """One axis of an activation (`extent` positions) cut into cells of `step`, the last shifted inward to end at
    the extent (geometry.tiles_of places tiles on these cells)."""

    extent: int
    step: int

    @property
    def cells(self) -> int:
        return -(-self.extent // self.step)

    def positions(self, device: torch.device) -> torch.Tensor:
        """(cells, step): the positions of each cell."""
        starts = [min(cell * self.step, self.extent - self.step) for cell in range(self.cells)]
        return torch.tensor([[start + offset for offset in range(self.step)] for start in starts], device=device)

    def cell_of(self, origin: torch.Tensor) -> torch.Tensor:
        """The cell whose start is `origin` (a shifted last cell starts below a multiple of the step)."""
        return torch.div(origin + self.step - 1, self.step, rounding_mode="floor")

    def lookup(self, cell_stride: int, offset_stride: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Int32 (extent + 1,) vectors: each position's cell and offset in it, times the strides they take in a flat
        index. A position in two cells (a shifted last cell overlaps the one before it) is in the first. The last
        entry, which positions outside the axis clamp to (-1 reads it too), is the border cell after the cells."""
        cells = [min(position // self.step, self.cells - 1) for position in range(self.extent)]
        offsets = [position - min(cell * self.step, self.extent - self.step) for position, cell in enumerate(cells)]
        return (torch.tensor([cell * cell_stride for cell in cells + [self.cells]], dtype=torch.int32, device=device),
                torch.tensor([offset * offset_stride for offset in offsets + [0]], dtype=torch.int32, device=device))


def cell_order(shape: tuple[int, int, int], size: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    """Raster positions (cells * t*h*w,) of a (T, H, W) volume cell by cell on the grid of tiles of `size`, each
    cell's positions in (frame, y, x) order: the layout of a CleanTable."""
    t, y, x = (Axis(extent, step).positions(device) for extent, step in zip(shape, size))
    height, width = shape[1:]
    flat = ((t[:, None, None, :, None, None] * height + y[None, :, None, None, :, None]) * width
            + x[None, None, :, None, None, :])  # (cells t, cells y, cells x, t, h, w)
    return flat.reshape(-1)


class CleanTable:
    """One layer's clean rows of one clip cell by cell on its tile grid (`size`: the layer's tile), then a block of
    zero rows and one of -inf rows: the start of every batch's row table [clean cells | zero | -inf | tile rows]."""

    def __init__(self, clean: torch.Tensor, shape: tuple[int, int, int], size: tuple[int, int, int]) -> None:
        self.shape, self.size = shape, size  # (T, H, W) and the tile (t, h, w)
        self.axes = tuple(Axis(extent, step) for extent, step in zip(shape, size))
        self.block = math.prod(size)
        self.cells = math.prod(axis.cells for axis in self.axes)
        self.grid = tuple(axis.cells + 1 for axis in self.axes)  # a border cell after each axis's cells
        cell_strides, offset_strides = (self.grid[1] * self.grid[2], self.grid[2], 1), (size[1] * size[2], size[2], 1)
        self.lookups = [axis.lookup(cells, offsets, clean.device)
                        for axis, cells, offsets in zip(self.axes, cell_strides, offset_strides)]
        self.order = cell_order(shape, size, clean.device).to(torch.int32)  # raster position of each clean row
        pads = torch.zeros(2 * self.block, clean.shape[1], dtype=clean.dtype, device=clean.device)
        pads[self.block:] = -torch.inf
        self.rows = torch.cat([clean.index_select(0, self.order), pads])

    @property
    def clean(self) -> torch.Tensor:
        """The clean rows in raster order (T*H*W, C)."""
        return self.rows.new_empty(math.prod(self.shape), self.rows.shape[1]).index_copy_(
            0, self.order.long(), self.rows[:len(self.order)])

    def pad_base(self, pad: float) -> int:
        """First row of the block holding `pad` (0 or -inf) in every channel."""
        return (self.cells + (pad != 0)) * self.block

    @property
    def first_tile_row(self) -> int:
        return (self.cells + 2) * self.block

    def with_tiles(self, values: torch.Tensor, pool: BufferPool) -> torch.Tensor:
        """A batch's table: these rows, then its patch values (U, C, t, h, w) as tile rows in (tile, frame, y, x)
        order. Its own buffer from `pool`, free again with the batch's activation: a plan's tiles may be many times
        a clip."""
        channels = values.shape[1]
        table = pool.take((self.first_tile_row + math.prod(values.shape[:1] + values.shape[2:]), channels),
                          self.rows.dtype, self.rows.device)
        table[:self.first_tile_row] = self.rows
        table[self.first_tile_row:].view(values.shape[0], *values.shape[2:], channels).copy_(
            values.permute(0, 2, 3, 4, 1))
        return table

    def cells_of(self, origins: torch.Tensor) -> torch.Tensor:
        """Flat cell numbers (P,) of tiles at `origins` (P, 3) (t0, y0, x0)."""
        cell_t, cell_y, cell_x = (axis.cell_of(origin) for axis, origin in zip(self.axes, origins.unbind(1)))
        _, rows, cols = self.axes
        return (cell_t * rows.cells + cell_y) * cols.cells + cell_x


def window_spans(size: tuple[int, int, int], window: Window) -> list[int]:
    """Input extent per axis that a window op reads to produce outputs of `size`."""
    return [(out - 1) * stride + (kernel - 1) * dilation + 1 for out, stride, kernel, dilation in
            zip(size, window.stride, window.kernel, window.dilation)]


Padding = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (low, high) per axis (T, H, W)


def window_padding(window: Window, shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> Padding:
    """The padding a window op reads around its input, high sides widened for ceil_mode's last windows."""
    return tuple((pad, max(pad, (out - 1) * stride + (kernel - 1) * dilation + 1 - size - pad))
                 for pad, stride, kernel, dilation, size, out in
                 zip(window.padding, window.stride, window.kernel, window.dilation, shape, out_shape))


class Activation:
    """A prefix node's output for B masks: `values` (U, C, t, h, w) of `tiles.computed`, placed on every tile of
    `tiles` that shares them; the clean rows elsewhere.

    Reading it anywhere is one lookup, vectorized over every position asked for: the base row of the mask's block
    on the position's cell (a (B, cells) int map: a tile's block, the clean cell's, or a pad block outside), plus
    its offset in the cell. So a layer gathers the windows of all its tiles in one go, whatever the masks."""

    def __init__(self, clean: CleanTable | None, tiles: Tiles, values: torch.Tensor, count: int,
                 pool: BufferPool, budget: int = WINDOW_BYTES) -> None:
        if clean is not None and clean.size != tiles.size:
            raise AssertionError(f"tiles of {tiles.size} on a clean table laid out in cells of {clean.size}")
        self.clean, self.tiles, self.values, self.count, self.pool = clean, tiles, values, count, pool
        self.budget = budget  # bytes of windows (and their lookups) gathered at once from this activation
        self._table: torch.Tensor | None = None
        self._bases: dict[int, torch.Tensor] = {}

    def table(self) -> torch.Tensor:
        """Row table [clean cells | zero | -inf | this batch's tile rows]; the values become a view of its tile rows
        (one copy of the patches in memory, channels-last as the convolutions read them)."""
        if self._table is None:
            self._table = self.clean.with_tiles(self.values, self.pool)
            shape = (self.values.shape[0], *self.values.shape[2:], self.values.shape[1])
            self.values = self._table[self.clean.first_tile_row:].view(shape).permute(0, 4, 1, 2, 3)
        return self._table

    def bases(self, pad_base: int) -> torch.Tensor:
        """Int32 map (B, cells T + 1, cells H + 1, cells W + 1): the first row of each mask's block on each cell (its
        tile's, else the clean cell's), `pad_base` on the border cells after each axis (positions outside it)."""
        if pad_base not in self._bases:
            clean, device = self.clean, self.values.device
            bases = self.pool.take((self.count, *clean.grid), torch.int32, device).fill_(pad_base)
            bases[:, :-1, :-1, :-1] = (torch.arange(clean.cells, dtype=torch.int32, device=device)
                                       * clean.block).view(*(cells - 1 for cells in clean.grid))
            mask, *origin = self.tiles.index.unbind(1)
            bases[(mask, *(axis.cell_of(start) for axis, start in zip(clean.axes, origin)))] = (
                clean.first_tile_row + self.tiles.slot.to(torch.int32) * clean.block)
            self._bases[pad_base] = bases
        return self._bases[pad_base]

    def rows_at(self, mask: torch.Tensor, frame: torch.Tensor, row: torch.Tensor, column: torch.Tensor,
                pad_base: int) -> torch.Tensor:
        """Rows of the table (the broadcast shape of the four int32 tensors) holding the value of each mask at each
        (frame, row, column): its tile's row where it has a tile there, else the clean row; a row of the pad block
        at `pad_base` outside. Per axis two lookups of the clamped positions; then one of the bases and one add."""
        bases, clean = self.bases(pad_base), self.clean
        flat, offset = mask * math.prod(clean.grid), None
        for (cells, offsets), axis, positions in zip(clean.lookups, clean.axes, (frame, row, column)):
            at = positions.clamp(-1, axis.extent)  # -1 and extent both read the border entry
            flat = flat + cells[at]
            offset = offsets[at] if offset is None else offset + offsets[at]
        rows = torch.index_select(bases.view(-1), 0, flat.reshape(-1)).view(flat.shape)
        return rows.add_(offset)

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """Table rows (rows.shape..., C), one index_select into pooled memory, channels last."""
        table = self.table()
        flat = rows.flatten()
        out = self.pool.take((len(flat), table.shape[1]), table.dtype, table.device)
        return torch.index_select(table, 0, flat, out=out).view(*rows.shape, table.shape[1])

    def windows(self, tiles: Tiles, window: Window, pad: float) -> torch.Tensor:
        """Input windows (P, C, t_in, h_in, w_in), channels-last, of a window op whose outputs are `tiles`, padded
        with `pad` exactly where the dense layer pads (positions outside the activation read the pad row)."""
        mask, *origin = tiles.index.to(torch.int32).unbind(1)
        spans = window_spans(tiles.size, window)
        t, y, x = ((start * stride - padding)[:, None] + torch.arange(span, dtype=torch.int32, device=start.device)
                   for start, stride, padding, span in zip(origin, window.stride, window.padding, spans))
        rows = self.rows_at(mask[:, None, None, None], t[:, :, None, None], y[:, None, :, None], x[:, None, None, :],
                            self.clean.pad_base(pad))
        return self.gather(rows).permute(0, 4, 1, 2, 3)

    def run_windows(self, run: Callable[[torch.Tensor], torch.Tensor], tiles: Tiles, window: Window,
                    pad: float) -> torch.Tensor:
        """`run` (a conv, pool or nothing) on the windows of `tiles`, gathered at most `budget` bytes of windows and
        their row lookups at a time (a window reads its kernel's reach, several times a tile): one chunk where the
        budget allows."""
        per_position = self.values.shape[1] * self.values.element_size() + LOOKUP_BYTES
        size = math.prod(window_spans(tiles.size, window)) * per_position
        chunks = tiles.index.split(max(1, int(self.budget // size))) if len(tiles.index) else [tiles.index]
        if len(chunks) == 1:
            return run(self.windows(tiles, window, pad))
        out = None
        start = 0
        for chunk in chunks:
            values = run(self.windows(Tiles(chunk, tiles.size), window, pad))
            if out is None:  # written chunk by chunk, channels-last as the windows: no second copy of the patches
                shape = (len(tiles.index), *values.shape[2:], values.shape[1])
                out = self.pool.take(shape, values.dtype, values.device).permute(0, 4, 1, 2, 3)
            out[start:start + len(chunk)] = values
            start += len(chunk)
        return out

    def frames(self, tiles: Tiles, index: torch.Tensor) -> torch.Tensor:
        """Values (P, C, t, h, w) of `tiles` of a frame selection: tile frame k reads this activation's frame
        index[k]."""
        mask, t0, y0, x0 = tiles.index.to(torch.int32).unbind(1)
        steps = [torch.arange(n, dtype=torch.int32, device=mask.device) for n in tiles.size]
        kept = index.to(torch.int32)[(t0[:, None] + steps[0]).long()]  # (P, t)
        y, x = y0[:, None] + steps[1], x0[:, None] + steps[2]
        rows = self.rows_at(mask[:, None, None, None], kept[:, :, None, None], y[:, None, :, None],
                            x[:, None, None, :], self.clean.pad_base(0))
        return self.gather(rows).permute(0, 4, 1, 2, 3)

    def at(self, tiles: Tiles) -> torch.Tensor:
        """Values (U, C, t, h, w) on the computed tiles of other tiles of the same resolution (gathered unless they
        are its own)."""
        if tiles is self.tiles:
            return self.values
        return self.run_windows(lambda x: x, tiles.computed, UNIT, 0.0)

    def dense(self, first: int, stop: int) -> torch.Tensor:
        """Masks [first, stop) of the batch (b, C, T, H, W), channels-last: clean broadcast with their tiles pasted."""
        device = self.values.device
        frames, height, width = (torch.arange(extent, dtype=torch.int32, device=device) for extent in self.clean.shape)
        rows = self.rows_at(torch.arange(first, stop, dtype=torch.int32, device=device).view(-1, 1, 1, 1),
                            frames.view(1, -1, 1, 1),
                            height.view(1, 1, -1, 1), width.view(1, 1, 1, -1), self.clean.pad_base(0))
        return self.gather(rows).permute(0, 4, 1, 2, 3)


def occluded_input(clean: CleanTable, fill: torch.Tensor, boxes: torch.Tensor, tiles: Tiles) -> torch.Tensor:
    """Input tiles (P, C, t, h, w) of `torch.where(mask, fill, clip)` from the clip's clean table and fill rows
    (T*H*W or 1, C); a tile element is masked when it lies in a box (B, G, T, 4) of its mask at its frame. A tile
    covers one cell exactly, so its clean values are that cell's block."""
    rows = (clean.cells_of(tiles.index[:, 1:]) * clean.block)[:, None] + torch.arange(clean.block,
                                                                                      device=tiles.index.device)
    shape = (len(tiles.index), *tiles.size, clean.rows.shape[1])
    values = clean.rows.index_select(0, rows.view(-1)).view(shape)
    if fill.shape[0] != 1:  # a fill per position, in raster order: the positions of the blocks' rows
        fill = fill.index_select(0, clean.order.index_select(0, rows.view(-1))).view(shape)
    mask, t0, y0, x0 = tiles.index.unbind(1)
    frames, ys, xs = (start[:, None] + torch.arange(step, device=start.device)
                      for start, step in zip((t0, y0, x0), tiles.size))
    member = boxes[mask[:, None], :, frames]  # (P, t, G, 4)
    in_rows = (ys[:, None, None] >= member[..., 0:1]) & (ys[:, None, None] < member[..., 1:2])  # (P, t, G, h)
    in_cols = (xs[:, None, None] >= member[..., 2:3]) & (xs[:, None, None] < member[..., 3:4])
    inside = (in_rows[..., :, None] & in_cols[..., None, :]).any(2)  # (P, t, h, w)
    return torch.where(inside[..., None], fill, values).permute(0, 4, 1, 2, 3)
