"""A whole video as the model sees it: windows of the model's clip length, and their maps stitched into one.

Windows start at 0, hop, 2 hop, ... while they fit, plus one ending at the video's last frame when the hops miss
it, so every frame is in at least one window. Where windows overlap, a frame's stitched value is the weighted mean
of the windows' values for it, each window weighting its frames by a tent (`tent_weights`): a frame near a
window's middle, which the model saw with context on both sides, counts most, and the stitched map has no jump
where a window begins or ends. Weights are normalized per frame before the sum, so a video of one window gives
that window's map exactly, and windows that agree give their common map.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def check_windows(frames: int, clip: int, hop: int) -> None:
    """A video of `frames` holds windows of `clip` frames stepped by `hop`; ValueError saying why not."""
    if clip < 1:
        raise ValueError(f"the clip length must be at least 1 frame, got {clip}")
    if frames < clip:
        raise ValueError(f"has {frames} frames, shorter than one clip of {clip}: a whole-video explanation needs "
                         f"at least {clip}")
    if not 1 <= hop <= clip:
        raise ValueError(f"hop {hop} must be between 1 and the clip length {clip} (a hop of 0 never moves; one "
                         "longer than a clip skips frames)")


def window_starts(frames: int, clip: int, hop: int) -> list[int]:
    """First frames of the windows of a `frames`-long video: 0, hop, ... while a window fits, then one ending at
    the last frame if the steps missed it."""
    check_windows(frames, clip, hop)
    starts = list(range(0, frames - clip + 1, hop))
    if starts[-1] + clip < frames:
        starts.append(frames - clip)
    return starts


def tent_weights(clip: int) -> torch.Tensor:
    """(clip,) float64 weights of a window's frames: min(i + 1, clip - i), rising to the middle and falling again."""
    index = torch.arange(clip, dtype=torch.float64)
    return torch.minimum(index + 1, clip - index)


def frame_weights(starts: Sequence[int], clip: int, frames: int) -> torch.Tensor:
    """(windows, clip) float64: each window's weight of each of its frames, divided by the frame's total weight
    over the windows that hold it (so a frame's weights sum to 1)."""
    tent = tent_weights(clip)
    total = torch.zeros(frames, dtype=torch.float64)
    for start in starts:
        total[start:start + clip] += tent
    return torch.stack([tent / total[start:start + clip] for start in starts])


def stitch(maps: Sequence[torch.Tensor], starts: Sequence[int], frames: int) -> torch.Tensor:
    """One (frames, H, W) float32 map from per-window (clip, H, W) maps starting at `starts`, blended where they
    overlap by the normalized tent weights (module docstring)."""
    if not maps or len(maps) != len(starts):
        raise ValueError(f"need one map per window start, got {len(maps)} maps for {len(starts)} starts")
    clip, height, width = maps[0].shape
    weights = frame_weights(starts, clip, frames)
    out = torch.zeros(frames, height, width, dtype=torch.float64)
    for window, start, weight in zip(maps, starts, weights):
        out[start:start + clip] += window.detach().double().cpu() * weight.view(-1, 1, 1)
    return out.float()
