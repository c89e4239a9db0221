"""When the evidence is: the video-level score of a windowed video, and its temporal evidence curve.

The video-level logits are the mean of the windows' logits (the datasets' protocol: a video's verdict is the
average over its clips); the video-level score is the target's softmax probability of them (or the target's mean
logit). The evidence curve tiles the video with spans of a quarter clip (the last may be shorter). For span j,
every voxel of its frames is replaced with the method's fill in every window that holds them, and the curve's value
is the video-level score of the clean video minus that of the occluded one. Only the windows a span touches are
scored again (about (clip + span) / hop of them), so the curve costs a few passes per window. It is the model's
answer to "when", whatever the map: methods with the same fill share it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

Model = Callable[[torch.Tensor], torch.Tensor]
Span = tuple[int, int]  # [first, end) frames


def span_length(clip: int) -> int:
    """A quarter clip, at least one frame."""
    return max(1, round(clip / 4))


def spans(frames: int, length: int) -> list[Span]:
    """[first, end) spans of `length` frames tiling a video of `frames`; the last may be shorter."""
    return [(first, min(first + length, frames)) for first in range(0, frames, length)]


@torch.no_grad()
def window_logits(model: Model, video: torch.Tensor, starts: Sequence[int], clip: int,
                  batch_size: int = 16) -> torch.Tensor:
    """(windows, classes) logits of the `clip`-frame windows of a (C, T, H, W) video starting at `starts`."""
    chunks = [list(starts[i:i + batch_size]) for i in range(0, len(starts), batch_size)]
    return torch.cat([model(torch.stack([video[:, s:s + clip] for s in chunk])).float().cpu() for chunk in chunks])


def video_scores(logits: torch.Tensor, target: int, kind: str = "prob") -> torch.Tensor:
    """Video-level scores (...,) float64 of (..., windows, classes) window logits: of their mean over windows."""
    mean = logits.double().mean(-2)
    if kind == "prob":
        return torch.softmax(mean, dim=-1)[..., target]
    if kind == "logit":
        return mean[..., target]
    raise ValueError(f"unknown score {kind!r}; expected prob or logit")


def window_probabilities(logits: torch.Tensor, target: int) -> torch.Tensor:
    """(windows,) float64 softmax probability of `target` in each window on its own."""
    return torch.softmax(logits.double(), dim=-1)[:, target]


@dataclass(frozen=True)
class EvidenceCurve:
    """Spans, the drop of the video-level score when each span is occluded, the clean video-level score and the
    occluded window clips scored for the curve."""

    spans: list[Span]
    drops: torch.Tensor  # (spans,) float64
    base: float
    clips: int


@dataclass(frozen=True)
class WindowedVideo:
    """A (C, T, H, W) video cut into `clip`-frame windows at `starts`, with their clean (windows, classes) logits."""

    video: torch.Tensor
    starts: list[int]
    clip: int
    logits: torch.Tensor

    def touching(self, span: Span) -> list[int]:
        """Indices of the windows that hold a frame of `span`."""
        return [i for i, s in enumerate(self.starts) if s < span[1] and s + self.clip > span[0]]

    def occluded(self, index: int, span: Span, fill: torch.Tensor) -> torch.Tensor:
        """Window `index` with the frames of `span` replaced by the `fill` (which broadcasts to the video)."""
        start = self.starts[index]
        window = self.video[:, start:start + self.clip].clone()
        first, end = max(span[0], start), min(span[1], start + self.clip)
        window[:, first - start:end - start] = fill.expand_as(self.video)[:, first:end]
        return window


@torch.no_grad()
def evidence_curve(model: Model, windowed: WindowedVideo, target: int, fill: torch.Tensor, kind: str = "prob",
                   batch_size: int = 16) -> EvidenceCurve:
    """The temporal evidence curve (module docstring) of `windowed`, spans occluded with `fill`."""
    frames = windowed.video.shape[1]
    tiles = spans(frames, span_length(windowed.clip))
    jobs = [(j, i) for j, span in enumerate(tiles) for i in windowed.touching(span)]
    scored = []
    for first in range(0, len(jobs), batch_size):
        chunk = jobs[first:first + batch_size]
        batch = torch.stack([windowed.occluded(i, tiles[j], fill) for j, i in chunk])
        scored.append(model(batch).float().cpu())
    occluded = torch.cat(scored) if scored else torch.zeros(0, windowed.logits.shape[1])
    per_span = windowed.logits.unsqueeze(0).repeat(len(tiles), 1, 1)
    for (j, i), logits in zip(jobs, occluded):
        per_span[j, i] = logits
    base = video_scores(windowed.logits, target, kind)
    drops = base - video_scores(per_span, target, kind)
    return EvidenceCurve(tiles, drops, float(base), len(jobs))
