"""The data path: a layer's activation for a batch of masks as its clean rows plus each mask's changed tiles.

Activations are kept channels-last and flat, one row of C values per position, so that "the clean activation
overlaid with mask b's tiles" is an int map per (mask, frame, y, x) into one row table
[clean rows | zero row | -inf row | tile rows], and every window a layer reads is one index_select of rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from aosa.kernels.incremental.buffers import BufferPool
from aosa.kernels.incremental.geometry import Tiles
from aosa.kernels.incremental.ops import UNIT, Window

WINDOW_BYTES = 64 * 2 ** 20  # gathered windows held at once per layer: bounds the peak, big enough for fast convs
GRID_BYTES = 16 * 2 ** 20  # int maps of positions into a row table held at once: a few masks' worth, never all N


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


def tile_positions(tiles: Tiles, grid: tuple[int, int, int], offset: tuple[int, int, int] = (0, 0, 0),
                   per_mask: bool = True) -> torch.Tensor:
    """Flat positions (P, t, h, w) of every tile element in a (B, T, H, W) grid (or (T, H, W) if not `per_mask`)
    whose origin lies at `offset`."""
    frames, height, width = grid
    mask, t0, y0, x0 = tiles.index.unbind(1)
    mask = mask if per_mask else torch.zeros_like(mask)
    t, y, x = (start[:, None] + shift + torch.arange(step, device=start.device)
               for start, shift, step in zip((t0, y0, x0), offset, tiles.size))
    start = ((mask[:, None] * frames + t) * height)[:, :, None] + y[:, None, :]  # (P, t, h)
    return (start * width)[..., None] + x[:, None, None, :]


def window_padding(window: Window, shape: tuple[int, int, int], out_shape: tuple[int, int, int]) -> Padding:
    """The padding a window op reads around its input, high sides widened for ceil_mode's last windows."""
    return tuple((pad, max(pad, (out - 1) * stride + (kernel - 1) * dilation + 1 - size - pad))
                 for pad, stride, kernel, dilation, size, out in
                 zip(window.padding, window.stride, window.kernel, window.dilation, shape, out_shape))


class Activation:
    """A prefix node's output for B masks: `values` (U, C, t, h, w) of `tiles.computed`, placed on every tile of
    `tiles` that shares them; the clean rows elsewhere."""

    def __init__(self, clean: CleanTable | None, tiles: Tiles, values: torch.Tensor, count: int,
                 pool: BufferPool) -> None:
        self.clean, self.tiles, self.values, self.count, self.pool = clean, tiles, values, count, pool
        self._table: torch.Tensor | None = None
        self._grid: tuple[tuple[Padding, int, int, int], torch.Tensor] | None = None

    def table(self) -> torch.Tensor:
        """Row table [clean | zero | -inf | this batch's tile rows]; the values become a view of its tile rows (one
        copy of the patches in memory, channels-last as the convolutions read them)."""
        if self._table is None:
            self._table = self.clean.with_tiles(self.values, self.pool)
            shape = (self.values.shape[0], *self.values.shape[2:], self.values.shape[1])
            self.values = self._table[self.clean.first_tile_row:].view(shape).permute(0, 4, 1, 2, 3)
        return self._table

    def grid(self, padding: Padding, pad_row: int, first: int = 0, stop: int | None = None) -> torch.Tensor:
        """Int32 map (stop - first, T', H', W') of masks [first, stop) of the padded activation into the row table:
        tile rows over clean rows, `pad_row` in the padding (the last one built is kept)."""
        stop = self.count if stop is None else stop
        key = (padding, pad_row, first, stop)
        if self._grid is None or self._grid[0] != key:
            (frames, height, width), (pt, py, px) = self.clean.shape, (low for low, _ in padding)
            size = [n + low + high for n, (low, high) in zip(self.clean.shape, padding)]
            grid = self.pool.take((stop - first, *size), torch.int32, self.values.device).fill_(pad_row)
            grid[:, pt:pt + frames, py:py + height, px:px + width] = self.clean.base.view(frames, height, width)
            low, high = torch.searchsorted(self.tiles.index[:, 0].contiguous(),
                                           torch.tensor([first, stop], device=grid.device)).tolist()
            index = self.tiles.index[low:high] - torch.tensor([first, 0, 0, 0], device=grid.device)
            positions = tile_positions(Tiles(index, self.tiles.size), tuple(size), (pt, py, px))  # (P, t, h, w)
            cell = math.prod(self.tiles.size)
            rows = (self.tiles.slot[low:high].to(torch.int32)[:, None] * cell + self.clean.first_tile_row
                    + torch.arange(cell, dtype=torch.int32, device=grid.device))  # shared tiles: their slot's rows
            grid.view(-1)[positions.flatten()] = rows.flatten()
            self._grid = (key, grid)
        return self._grid[1]

    def windows(self, tiles: Tiles, window: Window, pad: float, out_shape: tuple[int, int, int]) -> torch.Tensor:
        """Input windows (P, C, t_in, h_in, w_in), channels-last, of a window op whose outputs are `tiles` (sorted by
        mask), padded with `pad` exactly where the dense layer pads: two int gathers and one gather of rows."""
        first, stop = (int(tiles.index[0, 0]), int(tiles.index[-1, 0]) + 1) if len(tiles.index) else (0, 0)
        grid = self.grid(window_padding(window, self.clean.shape, out_shape), self.clean.pad_row(pad), first, stop)
        _, frames, height, width = grid.shape
        device = grid.device
        spans = window_spans(tiles.size, window)
        template = (torch.arange(spans[0], device=device) * height)[:, None] + torch.arange(spans[1], device=device)
        template = (template * width)[..., None] + torch.arange(spans[2], device=device)  # (t_in, h_in, w_in)
        mask, t0, y0, x0 = tiles.index.unbind(1)
        st, sy, sx = window.stride
        corner = (((mask - first) * frames + t0 * st) * height + y0 * sy) * width + x0 * sx  # window origin
        flat = (corner.to(torch.int32)[:, None] + template.to(torch.int32).flatten()).flatten()
        return self._rows(grid, flat).view(len(corner), *spans, self.clean.rows.shape[1]).permute(0, 4, 1, 2, 3)

    def _rows(self, grid: torch.Tensor, flat: torch.Tensor) -> torch.Tensor:
        """Rows (len(flat), C) of the table at the grid's flat positions `flat`: two gathers into pooled memory."""
        table = self.table()
        positions = torch.index_select(grid.view(-1), 0, flat, out=self.pool.take((len(flat),), grid.dtype,
                                                                                   grid.device))
        return torch.index_select(table, 0, positions, out=self.pool.take((len(flat), table.shape[1]), table.dtype,
                                                                           table.device))

    def run_windows(self, run: Callable[[torch.Tensor], torch.Tensor], tiles: Tiles, window: Window, pad: float,
                    out_shape: tuple[int, int, int], budget: int = WINDOW_BYTES) -> torch.Tensor:
        """`run` (a conv, pool or nothing) on the windows of `tiles`, gathered a chunk at a time: at most `budget`
        bytes of windows (a window reads its kernel's reach, several times a tile) and GRID_BYTES of int maps
        (the masks a chunk spans) exist at once."""
        size = math.prod(window_spans(tiles.size, window)) * self.values.shape[1] * self.values.element_size()
        grid_size = math.prod(n + low + high for n, (low, high) in
                              zip(self.clean.shape, window_padding(window, self.clean.shape, out_shape))) * 4
        chunks = _chunks(tiles.index[:, 0], max(1, budget // size), max(1, GRID_BYTES // grid_size)) or [(0, 0)]
        out = None
        for start, stop in chunks:
            values = run(self.windows(Tiles(tiles.index[start:stop], tiles.size), window, pad, out_shape))
            if len(chunks) == 1:
                return values
            if out is None:  # written chunk by chunk, channels-last as the windows: no second copy of the patches
                shape = (len(tiles.index), *values.shape[2:], values.shape[1])
                out = self.pool.take(shape, values.dtype, values.device).permute(0, 4, 1, 2, 3)
            out[start:stop] = values
        return out

    def frames(self, tiles: Tiles, index: torch.Tensor) -> torch.Tensor:
        """Values (P, C, t, h, w) of `tiles` of a frame selection: tile frame k reads this activation's frame
        index[k] (one gather of positions, one of rows, a chunk of masks at a time)."""
        positions = math.prod(self.clean.shape) * 4
        chunks = _chunks(tiles.index[:, 0], len(tiles.index), max(1, GRID_BYTES // positions)) or [(0, 0)]
        return torch.cat([self._frames(Tiles(tiles.index[start:stop], tiles.size), index) for start, stop in chunks])

    def _frames(self, tiles: Tiles, index: torch.Tensor) -> torch.Tensor:
        """`frames` for tiles of masks a grid holds at once."""
        first, stop = (int(tiles.index[0, 0]), int(tiles.index[-1, 0]) + 1) if len(tiles.index) else (0, 0)
        grid = self.grid(((0, 0), (0, 0), (0, 0)), self.clean.zero_row, first, stop)
        _, frames, height, width = grid.shape
        mask, t0, y0, x0 = tiles.index.unbind(1)
        device = grid.device
        kept = index[t0[:, None] + torch.arange(tiles.size[0], device=device)]  # (P, t)
        rows = (((mask[:, None] - first) * frames + kept) * height)[:, :, None] + y0[:, None, None] + torch.arange(
            tiles.size[1], device=device)  # (P, t, h)
        flat = (rows * width)[..., None] + x0[:, None, None, None] + torch.arange(tiles.size[2], device=device)
        values = self._rows(grid, flat.flatten().to(torch.int32))
        return values.view(len(mask), *tiles.size, self.clean.rows.shape[1]).permute(0, 4, 1, 2, 3)

    def at(self, tiles: Tiles) -> torch.Tensor:
        """Values (U, C, t, h, w) on the computed tiles of other tiles of the same resolution (gathered unless they
        are its own)."""
        if tiles is self.tiles:
            return self.values
        return self.run_windows(lambda x: x, tiles.computed, UNIT, 0.0, self.clean.shape)

    def dense(self, first: int, stop: int) -> torch.Tensor:
        """Masks [first, stop) of the batch (b, C, T, H, W), channels-last: clean broadcast with their tiles pasted."""
        grid = self.grid(((0, 0), (0, 0), (0, 0)), self.clean.zero_row, first, stop)
        table = self.table()
        rows = torch.index_select(table, 0, grid.view(-1), out=self.pool.take((grid.numel(), table.shape[1]),
                                                                              table.dtype, table.device))
        return rows.view(*grid.shape, table.shape[1]).permute(0, 4, 1, 2, 3)


def _chunks(masks: torch.Tensor, tiles: int, spanned: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of rows of a mask-sorted tile list, each at most `tiles` rows spanning at most `spanned`
    masks."""
    bounds, start, count, masks = [], 0, len(masks), masks.contiguous()
    while start < count:
        limit = int(torch.searchsorted(masks, masks[start] + spanned))
        stop = max(start + 1, min(start + tiles, limit, count))
        bounds.append((start, stop))
        start = stop
    return bounds


def occluded_input(clip: torch.Tensor, fill: torch.Tensor, boxes: torch.Tensor, tiles: Tiles,
                   shape: tuple[int, int, int]) -> torch.Tensor:
    """Input tiles (P, C, t, h, w) of `torch.where(mask, fill, clip)` from clip and fill rows (T*H*W or 1, C); a
    tile element is masked when it lies in a box (B, G, T, 4) of its mask at its frame."""
    positions = tile_positions(tiles, shape, per_mask=False)
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
