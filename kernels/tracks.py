"""Point tracking through dense optical flow, with the dead-when-outside rule."""

from __future__ import annotations

import torch


def round_half_up(values: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer, halves up (torch.round rounds halves to even)."""
    return torch.floor(values + 0.5).long()


def inside_frame(points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Whether each (x, y) point rounds to a pixel of the frame."""
    pixel = round_half_up(points)
    return (pixel[:, 0] >= 0) & (pixel[:, 0] < width) & (pixel[:, 1] >= 0) & (pixel[:, 1] < height)


def track_points(points: torch.Tensor, flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Follow (N, 2) (x, y) points through flow (T-1, H, W, 2) of (dx, dy): p(t+1) = p(t) + flow_t(round(p(t))).

    Returns tracks (N, T, 2) and alive (N, T). A point that leaves the frame is dead from that frame
    on and stays frozen at its last position, so its later displacements are zero.
    """
    steps, height, width, _ = flow.shape
    position = points.to(flow.dtype).clone()
    alive = inside_frame(position, height, width)
    tracks, alives = [position], [alive]
    for t in range(steps):
        pixel = round_half_up(position)
        ix = pixel[:, 0].clamp(0, width - 1)
        iy = pixel[:, 1].clamp(0, height - 1)
        moved = position + flow[t, iy, ix]
        alive = alive & inside_frame(moved, height, width)
        position = torch.where(alive[:, None], moved, position)
        tracks.append(position)
        alives.append(alive)
    return torch.stack(tracks, dim=1), torch.stack(alives, dim=1)
