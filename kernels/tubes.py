"""Occlusion masks as geometry: per-frame boxes of tubes and groups of tubes, never dense arrays.

A tube is one box per frame (empty where the tube is absent). An occlusion mask is the union of a
group of tubes: a single tube for OSA's cuboids, a tube and its top-K partners for AOSA. Boolean
masks are built a batch at a time, on the device that needs them, only to occlude clips; sums over
masks and maps painted from masks use box arithmetic (integral images, inclusion-exclusion over
the 2^G - 1 overlaps of a group's tubes) and never touch a mask voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch

from aosa.kernels.tracks import round_half_up


@dataclass(frozen=True)
class TubeSet:
    """`boxes` (M, T, 4) int64 rows [y0, y1, x0, x1) per frame; `groups` (N, G) tube indices per mask."""

    boxes: torch.Tensor
    groups: torch.Tensor
    height: int
    width: int

    def __len__(self) -> int:
        return self.groups.shape[0]

    @property
    def frames(self) -> int:
        return self.boxes.shape[1]

    def masks(self, index: torch.Tensor, device: torch.device | str | None = None) -> torch.Tensor:
        """Boolean masks (B, T, H, W) of the masks numbered `index`, built on `device`."""
        return self.counts(index, device) > 0.5

    def weights(self, index: torch.Tensor, out: torch.Tensor, repeat: int = 1) -> torch.Tensor:
        """The masks numbered `index` as 0/1 floats written into `out` (B, T, H, W * repeat), on its device and
        dtype: a batch after batch reuses one buffer (a fresh one costs page faults on a CPU)."""
        return self.counts(index, out.device, out, repeat).clamp_max_(1)

    def counts(self, index: torch.Tensor, device: torch.device | str | None = None,
               out: torch.Tensor | None = None, repeat: int = 1) -> torch.Tensor:
        """How many tubes of each mask cover each voxel, (B, T, H, W * repeat) floats, each column `repeat` times
        (a channels-last clip's channels): for each (mask, frame) one (H x G) @ (G x W) product of its tubes'
        row and column indicators (sums of 0/1: exact)."""
        boxes = self.boxes.to(device)[self.groups[index].to(device)]  # (B, G, T, 4)
        count, _, frames, _ = boxes.shape
        rows = torch.arange(self.height, device=boxes.device)
        cols = torch.arange(self.width * repeat, device=boxes.device) // repeat
        in_rows = (rows >= boxes[..., 0:1]) & (rows < boxes[..., 1:2])  # (B, G, T, H)
        in_cols = (cols >= boxes[..., 2:3]) & (cols < boxes[..., 3:4])  # (B, G, T, W * repeat)
        dtype = torch.float32 if out is None else out.dtype
        in_rows = in_rows.to(dtype).permute(0, 2, 3, 1).reshape(count * frames, self.height, -1)
        in_cols = in_cols.to(dtype).permute(0, 2, 1, 3).reshape(count * frames, -1, len(cols))
        flat = None if out is None else out.view(count * frames, self.height, len(cols))
        return torch.bmm(in_rows, in_cols, out=flat).view(count, frames, self.height, len(cols))

    def intersections(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (B, S, T, 4) where each of the S non-empty subsets of a group's tubes overlap, and their
        inclusion-exclusion signs (S,): the union of a group is the signed sum of these boxes."""
        members = self.boxes[self.groups[index]]  # (B, G, T, 4)
        size = members.shape[1]
        subsets = torch.arange(1, 2 ** size)
        chosen = ((subsets[:, None] >> torch.arange(size)) & 1).bool()  # (S, G)
        signs = torch.where(chosen.sum(1) % 2 == 1, 1.0, -1.0).double()
        shape = (members.shape[0], len(subsets), self.frames, 2)
        starts = torch.full(shape, -1, dtype=members.dtype)  # (B, S, T, [y0, x0]): the largest start of the chosen
        ends = torch.full(shape, max(self.height, self.width) + 1, dtype=members.dtype)  # ... the smallest end
        for member, pick in zip(members.unbind(1), chosen.T):  # G elementwise steps, not reductions over G
            pick = pick.view(1, -1, 1, 1)
            starts = torch.where(pick, torch.maximum(starts, member[:, None, :, 0::2]), starts)
            ends = torch.where(pick, torch.minimum(ends, member[:, None, :, 1::2]), ends)
        (y0, x0), (y1, x1) = starts.unbind(-1), ends.unbind(-1)
        boxes = torch.stack([y0, torch.maximum(y1, y0), x0, torch.maximum(x1, x0)], dim=-1)
        return boxes, signs

    @cached_property
    def _overlaps(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every mask's overlap boxes, once: flat indices (4, N, S, T) of their corners in a (T, H+1, W+1)
        grid (order y0x0, y0x1, y1x0, y1x1), signs (S,) and areas (N, S, T)."""
        chunks = [self.intersections(index) for index in torch.arange(len(self)).split(4096)]
        boxes, signs = torch.cat([boxes for boxes, _ in chunks]), chunks[0][1]
        y0, y1, x0, x1 = boxes.unbind(-1)
        frame = torch.arange(self.frames).view(1, 1, -1) * (self.height + 1)
        corners = torch.stack([((frame + y) * (self.width + 1) + x) for y in (y0, y1) for x in (x0, x1)])
        return corners, signs, ((y1 - y0) * (x1 - x0)).double()

    def sums(self, voxels: torch.Tensor) -> torch.Tensor:
        """Sum (N,) float64 of a (T, H, W) voxel map over each mask, from box sums of an integral image."""
        integral = torch.zeros(self.frames, self.height + 1, self.width + 1, dtype=torch.float64)
        integral[:, 1:, 1:] = voxels.detach().double().cpu().cumsum(1).cumsum(2)
        corners, signs, _ = self._overlaps
        a, b, c, d = integral.flatten()[corners]
        return ((a - b - c + d).sum(-1) * signs).sum(-1)

    def volumes(self) -> torch.Tensor:
        """Voxel count (N,) of each mask."""
        _, signs, areas = self._overlaps
        return (areas.sum(-1) * signs).sum(-1)

    def paint(self, values: torch.Tensor) -> torch.Tensor:
        """Voxel map (T, H, W) float64 of sum_i values_i * occ_i(p), painted with 2D difference arrays."""
        corners, signs, areas = self._overlaps
        weight = (values.detach().double().cpu()[:, None] * signs)[..., None].expand(areas.shape).flatten()
        diff = torch.zeros(self.frames * (self.height + 1) * (self.width + 1), dtype=torch.float64)
        for corner, sign in zip(corners, (1.0, -1.0, -1.0, 1.0)):
            diff.index_add_(0, corner.flatten(), weight, alpha=sign)
        return diff.view(self.frames, self.height + 1, self.width + 1).cumsum(1).cumsum(2)[:, :-1, :-1]


def tube_boxes(tracks: torch.Tensor, alive: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """Boxes (N, T, 4) of `size` x `size` centred on round(track), clipped to the frame, empty where dead."""
    centre = round_half_up(tracks)  # (N, T, 2) as (x, y)
    y0 = centre[..., 1] - size // 2
    x0 = centre[..., 0] - size // 2
    boxes = torch.stack([y0.clamp(0, height), (y0 + size).clamp(0, height),
                         x0.clamp(0, width), (x0 + size).clamp(0, width)], dim=-1)
    return torch.where(alive[..., None], boxes, torch.zeros_like(boxes))


def single_tube_groups(count: int) -> torch.Tensor:
    """Groups (count, 1) where mask i is tube i alone."""
    return torch.arange(count).unsqueeze(1)


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """Starts of a sliding window as Captum's Occlusion places them: ceil((L-W)/S)+1 steps of S."""
    steps = math.ceil(max(length - window, 0) / stride) + 1
    return [i * stride for i in range(steps)]


def cuboid_tubes(frames: int, height: int, width: int, window: tuple[int, int, int],
                 stride: tuple[int, int, int]) -> TubeSet:
    """Every position of a (t, h, w) cuboid slid with `stride` over the clip, as single-tube masks."""
    t_win, h_win, w_win = window
    t_stride, h_stride, w_stride = stride
    boxes = []
    for t0 in window_starts(frames, t_win, t_stride):
        present = torch.zeros(frames, dtype=torch.bool)
        present[t0:t0 + t_win] = True
        for y0 in window_starts(height, h_win, h_stride):
            for x0 in window_starts(width, w_win, w_stride):
                box = torch.tensor([y0, min(y0 + h_win, height), x0, min(x0 + w_win, width)])
                boxes.append(torch.where(present[:, None], box, torch.zeros_like(box)))
    stacked = torch.stack(boxes)
    return TubeSet(stacked, single_tube_groups(len(stacked)), height, width)
