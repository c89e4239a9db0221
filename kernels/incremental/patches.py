"""The data path: a layer's activation for a batch of masks as its clean rows plus each mask's changed tiles.

Activations are kept channels-last and flat, one row of C values per position, in one row table per batch
[clean rows | zero row | -inf row | tile rows]: "the clean activation overlaid with mask b's tiles" is a lookup
from a position to its row (Activation.rows_at), and every window a layer reads is one index_select of rows.
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


class CleanTable:
    """One layer's clean rows of one clip with a zero row and a -inf row after them: the start of every batch's
    row table [clean rows | zero row | -inf row | tile rows]."""

    def __init__(self, clean: torch.Tensor, shape: tuple[int, int, int]) -> None:
        self.shape = shape  # (T, H, W)
        self.positions = clean.shape[0]
        self.rows = torch.cat([clean, torch.zeros(2, clean.shape[1], dtype=clean.dtype, device=clean.device)])
        self.rows[self.positions + 1] = -torch.inf
        self.base = torch.arange(self.positions, dtype=torch.int32, device=clean.device)

    @property
    def clean(self) -> torch.Tensor:
        return self.rows[:self.positions]

    @property
    def zero_row(self) -> int:
        return self.positions

    def pad_row(self, pad: float) -> int:
        """The row holding `pad` (0 or -inf) in every channel."""
        return self.positions if pad == 0 else self.positions + 1

    @property
    def first_tile_row(self) -> int:
        return self.positions + 2

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


def window_spans(size: tuple[int, int, int], window: Window) -> list[int]:
    """Input extent per axis that a window op reads to produce outputs of `size`."""
    return [(out - 1) * stride + (kernel - 1) * dilation + 1 for out, stride, kernel, dilation in
            zip(size, window.stride, window.kernel, window.dilation)]


Padding = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (low, high) per axis (T, H, W)


def tile_positions(tiles: Tiles, shape: tuple[int, int, int]) -> torch.Tensor:
    """Flat positions (P, t, h, w) of every tile element in a (T, H, W) volume."""
    _, height, width = shape
    _, t0, y0, x0 = tiles.index.unbind(1)
    t, y, x = (start[:, None] + torch.arange(step, device=start.device)
               for start, step in zip((t0, y0, x0), tiles.size))
    start = (t * height)[:, :, None] + y[:, None, :]  # (P, t, h)
    return (start * width)[..., None] + x[:, None, None, :]


def window_padding(window: Window, shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> Padding:
    """The padding a window op reads around its input, high sides widened for ceil_mode's last windows."""
    return tuple((pad, max(pad, (out - 1) * stride + (kernel - 1) * dilation + 1 - size - pad))
                 for pad, stride, kernel, dilation, size, out in
                 zip(window.padding, window.stride, window.kernel, window.dilation, shape, out_shape))


@dataclass(frozen=True)
class Axis:
    """One axis of an activation (`extent` positions) cut into cells of `step`, the last shifted inward to end at
    the extent (geometry.tiles_of places tiles on these cells)."""

    extent: int
    step: int

    @property
    def cells(self) -> int:
        return -(-self.extent // self.step)

    def cell_of(self, origin: torch.Tensor) -> torch.Tensor:
        """The cell whose start is `origin` (a shifted last cell starts below a multiple of the step)."""
        return torch.div(origin + self.step - 1, self.step, rounding_mode="floor")

    def locate(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(inside, cell, offset in the cell, clamped position) of int positions: a cell that covers each one."""
        inside = (positions >= 0) & (positions < self.extent)
        clamped = positions.clamp(0, self.extent - 1)
        cell = torch.div(clamped, self.step, rounding_mode="floor").clamp(max=self.cells - 1)
        return inside, cell, clamped - (cell * self.step).clamp(max=self.extent - self.step), clamped


class Activation:
    """A prefix node's output for B masks: `values` (U, C, t, h, w) of `tiles.computed`, placed on every tile of
    `tiles` that shares them; the clean rows elsewhere.

    Reading it anywhere is one lookup, vectorized over every position asked for: a position's cell, the slot of the
    mask's tile on that cell (a (B, cells) int map, one entry per tile-sized cell, not per position), and the row of
    the table that holds its value. So a layer gathers the windows of all its tiles in one go, whatever the number of
    masks, and its operator count does not grow with them."""

    def __init__(self, clean: CleanTable | None, tiles: Tiles, values: torch.Tensor, count: int,
                 pool: BufferPool, budget: int = WINDOW_BYTES) -> None:
        self.clean, self.tiles, self.values, self.count, self.pool = clean, tiles, values, count, pool
        self.budget = budget  # bytes of windows (and their lookups) gathered at once from this activation
        self._table: torch.Tensor | None = None
        self._cells: torch.Tensor | None = None

    def table(self) -> torch.Tensor:
        """Row table [clean | zero | -inf | this batch's tile rows]; the values become a view of its tile rows (one
        copy of the patches in memory, channels-last as the convolutions read them)."""
        if self._table is None:
            self._table = self.clean.with_tiles(self.values, self.pool)
            shape = (self.values.shape[0], *self.values.shape[2:], self.values.shape[1])
            self.values = self._table[self.clean.first_tile_row:].view(shape).permute(0, 4, 1, 2, 3)
        return self._table

    @property
    def axes(self) -> tuple[Axis, Axis, Axis]:
        return tuple(Axis(extent, step) for extent, step in zip(self.clean.shape, self.tiles.size))  # type: ignore

    def cells(self) -> torch.Tensor:
        """Int32 map (B, cells T, cells H, cells W): the slot of each mask's tile on each cell, -1 where it has none."""
        if self._cells is None:
            axes, device = self.axes, self.values.device
            cells = self.pool.take((self.count, *(axis.cells for axis in axes)), torch.int32, device).fill_(-1)
            mask, *origin = self.tiles.index.unbind(1)
            cells[(mask, *(axis.cell_of(start) for axis, start in zip(axes, origin)))] = self.tiles.slot.to(torch.int32)
            self._cells = cells
        return self._cells

    def rows_at(self, mask: torch.Tensor, frame: torch.Tensor, row: torch.Tensor, column: torch.Tensor,
                pad_row: int) -> torch.Tensor:
        """Rows of the table (the broadcast shape of the four int32 tensors) holding the value of each mask at each
        (frame, row, column): its tile's row where it has a tile there, else the clean row; `pad_row` outside."""
        cells = self.cells()
        (inside_t, cell_t, off_t, t), (inside_y, cell_y, off_y, y), (inside_x, cell_x, off_x, x) = (
            axis.locate(positions) for axis, positions in zip(self.axes, (frame, row, column)))
        counts, size, (height, width) = cells.shape[1:], self.tiles.size, self.clean.shape[1:]
        slot = cells.view(-1)[((mask * counts[0] + cell_t) * counts[1] + cell_y) * counts[2] + cell_x]
        tile_row = self.clean.first_tile_row + slot * math.prod(size) + (off_t * size[1] + off_y) * size[2] + off_x
        rows = torch.where(slot >= 0, tile_row, (t * height + y) * width + x)
        return torch.where(inside_t & inside_y & inside_x, rows, pad_row)

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
                            self.clean.pad_row(pad))
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
                            x[:, None, None, :], self.clean.zero_row)
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
                            height.view(1, 1, -1, 1), width.view(1, 1, 1, -1), self.clean.zero_row)
        return self.gather(rows).permute(0, 4, 1, 2, 3)


def occluded_input(clip: torch.Tensor, fill: torch.Tensor, boxes: torch.Tensor, tiles: Tiles,
                   shape: tuple[int, int, int]) -> torch.Tensor:
    """Input tiles (P, C, t, h, w) of `torch.where(mask, fill, clip)` from clip and fill rows (T*H*W or 1, C); a
    tile element is masked when it lies in a box (B, G, T, 4) of its mask at its frame."""
    positions = tile_positions(tiles, shape)
    fill = fill if fill.shape[0] == 1 else fill[positions]
    mask, t0, y0, x0 = tiles.index.unbind(1)
    frames, rows, cols = (start[:, None] + torch.arange(step, device=start.device)
                          for start, step in zip((t0, y0, x0), tiles.size))
    member = boxes[mask[:, None], :, frames]  # (P, t, G, 4)
    in_rows = (rows[:, None, None] >= member[..., 0:1]) & (rows[:, None, None] < member[..., 1:2])  # (P, t, G, h)
    in_cols = (cols[:, None, None] >= member[..., 2:3]) & (cols[:, None, None] < member[..., 3:4])
    inside = (in_rows[..., :, None] & in_cols[..., None, :]).any(2)  # (P, t, h, w)
    values = torch.where(inside[..., None], fill, clip[positions])  # (P, t, h, w, C)
    return values.permute(0, 4, 1, 2, 3)
