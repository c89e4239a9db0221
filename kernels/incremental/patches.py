"""The data path: a layer's activation for a batch of masks as its clean rows plus each mask's changed tiles.

Activations are kept channels-last and flat, one row of C values per position, so that "the clean activation
overlaid with mask b's tiles" is an int map per (mask, frame, y, x) into one row table
[clean rows | zero row | -inf row | tile rows], and every window a layer reads is one index_select of rows.
"""

from __future__ import annotations

import torch

from kernels.incremental.geometry import Tiles
from kernels.incremental.ops import UNIT, Window


def to_rows(activation: torch.Tensor) -> torch.Tensor:
    """(C, T, H, W) -> (T*H*W, C), a fresh channels-last copy."""
    channels = activation.shape[0]
    return torch.empty(activation[0].numel(), channels, dtype=activation.dtype,
                       device=activation.device).copy_(activation.permute(1, 2, 3, 0).reshape(-1, channels))


def tile_rows(values: torch.Tensor) -> torch.Tensor:
    """Patch values (P, C, t, h, w) -> rows (P*t*h*w, C) in (tile, frame, y, x) order."""
    return values.permute(0, 2, 3, 4, 1).reshape(-1, values.shape[1])


class CleanTable:
    """One layer's clean rows of one clip and its two pad rows, kept for every batch of masks."""

    def __init__(self, clean: torch.Tensor, shape: tuple[int, int, int]) -> None:
        self.shape = shape  # (T, H, W)
        self.positions = clean.shape[0]
        pads = torch.zeros(2, clean.shape[1], dtype=clean.dtype, device=clean.device)
        pads[1] = -torch.inf
        self.table = torch.cat([clean, pads])
        self.base = torch.arange(self.positions, dtype=torch.int32, device=clean.device)

    @property
    def zero_row(self) -> int:
        return self.positions

    def pad_row(self, pad: float) -> int:
        """The row holding `pad` (0 or -inf) in every channel."""
        return self.positions if pad == 0 else self.positions + 1

    @property
    def first_tile_row(self) -> int:
        return self.positions + 2

    def with_tiles(self, rows: torch.Tensor) -> torch.Tensor:
        """The table with a batch's tile rows appended (a new tensor, freed with the batch)."""
        return torch.cat([self.table, rows])


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
    """A prefix node's output for B masks: `values` (P, C, t, h, w) on `tiles`, the clean rows elsewhere."""

    def __init__(self, clean: CleanTable | None, tiles: Tiles, values: torch.Tensor, count: int) -> None:
        self.clean, self.tiles, self.values, self.count = clean, tiles, values, count
        self._table: torch.Tensor | None = None
        self._grids: dict[tuple[Padding, int], torch.Tensor] = {}

    def table(self) -> torch.Tensor:
        """Row table [clean | zero | -inf | this batch's tile rows]."""
        if self._table is None:
            self._table = self.clean.with_tiles(tile_rows(self.values))
        return self._table

    def grid(self, padding: Padding, pad_row: int) -> torch.Tensor:
        """Int32 map (B, T', H', W') of the padded activation into the row table: tile rows over clean rows,
        `pad_row` in the padding."""
        key = (padding, pad_row)
        if key not in self._grids:
            (frames, height, width), (pt, py, px) = self.clean.shape, (low for low, _ in padding)
            size = [n + low + high for n, (low, high) in zip(self.clean.shape, padding)]
            grid = torch.full((self.count, *size), pad_row, dtype=torch.int32, device=self.values.device)
            grid[:, pt:pt + frames, py:py + height, px:px + width] = self.clean.base.view(frames, height, width)
            positions = tile_positions(self.tiles, tuple(size), (pt, py, px)).flatten()
            grid.view(-1)[positions] = torch.arange(positions.numel(), dtype=torch.int32,
                                                    device=grid.device) + self.clean.first_tile_row
            self._grids[key] = grid
        return self._grids[key]

    def windows(self, tiles: Tiles, window: Window, pad: float, out_shape: tuple[int, int, int]) -> torch.Tensor:
        """Input windows (P, C, t_in, h_in, w_in), channels-last, of a window op whose outputs are `tiles`,
        padded with `pad` exactly where the dense layer pads: two int gathers and one gather of rows."""
        grid = self.grid(window_padding(window, self.clean.shape, out_shape), self.clean.pad_row(pad))
        _, frames, height, width = grid.shape
        device = grid.device
        spans = [(size - 1) * stride + (kernel - 1) * dilation + 1 for size, stride, kernel, dilation in
                 zip(tiles.size, window.stride, window.kernel, window.dilation)]
        template = (torch.arange(spans[0], device=device) * height)[:, None] + torch.arange(spans[1], device=device)
        template = (template * width)[..., None] + torch.arange(spans[2], device=device)  # (t_in, h_in, w_in)
        mask, t0, y0, x0 = tiles.index.unbind(1)
        st, sy, sx = window.stride
        corner = ((mask * frames + t0 * st) * height + y0 * sy) * width + x0 * sx  # window origin, padded grid
        flat = (corner.to(torch.int32)[:, None] + template.to(torch.int32).flatten()).flatten()
        table = self.table()
        rows = table.index_select(0, grid.view(-1).index_select(0, flat))
        return rows.view(len(corner), *spans, table.shape[1]).permute(0, 4, 1, 2, 3)

    def at(self, tiles: Tiles) -> torch.Tensor:
        """Values (P, C, t, h, w) on other tiles of the same resolution (gathered unless they are its own)."""
        if tiles is self.tiles:
            return self.values
        return self.windows(tiles, UNIT, 0.0, self.clean.shape)

    def dense(self) -> torch.Tensor:
        """The whole batch (B, C, T, H, W), channels-last: clean broadcast with each mask's tiles pasted."""
        grid = self.grid(((0, 0), (0, 0), (0, 0)), self.clean.zero_row)
        table = self.table()
        return table.index_select(0, grid.view(-1)).view(*grid.shape, table.shape[1]).permute(0, 4, 1, 2, 3)


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
