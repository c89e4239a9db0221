"""Ground truth for time: is a video's evidence where a known segment [first, end) of its frames says it is?

* Temporal pointing game: a curve over the evidence curve's spans peaks (the first of equal maxima) on a span that
  overlaps the segment; a constant curve is a miss. Its chance level is the share of spans that overlap the
  segment. Played by the evidence curve (the model's "when", shared by methods with one fill) and by the stitched
  map (each span's mean positive saliency per frame: the map's own "when", which a random map plays at chance).
* Temporal mass: the share of a per-frame curve's positive mass inside the segment, for the evidence curve (each
  frame takes its span's value) and for the stitched map (each frame's positive saliency summed).
* S-PT inside the segment: the spatial pointing game over the boxed frames of the segment only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from aosa.kernels.metrics.pointing import Box

Span = tuple[int, int]


def overlaps(span: Span, segment: Span) -> bool:
    """Whether the frames [first, end) of `span` and of `segment` share one."""
    return span[0] < segment[1] and segment[0] < span[1]


def peak_span(values: torch.Tensor) -> int | None:
    """Index of the first maximum of a curve, None for a constant curve (it points nowhere)."""
    if values.numel() == 0 or bool((values == values[0]).all()):
        return None
    return int(torch.argmax(values))


def temporal_pointing(values: torch.Tensor, spans: Sequence[Span], segment: Span) -> bool:
    """Whether the curve over `spans` peaks on a span overlapping the segment."""
    peak = peak_span(values)
    return peak is not None and overlaps(spans[peak], segment)


def pointing_chance(spans: Sequence[Span], segment: Span) -> float:
    """The temporal pointing game's rate for a peak at a uniformly random span."""
    return sum(overlaps(span, segment) for span in spans) / len(spans)


def per_frame(values: torch.Tensor, spans: Sequence[Span]) -> torch.Tensor:
    """A curve over spans as one value per frame: each frame takes its span's value."""
    return torch.cat([values[j].expand(end - first) for j, (first, end) in enumerate(spans)])


def span_means(frame_values: torch.Tensor, spans: Sequence[Span]) -> torch.Tensor:
    """A per-frame curve as each span's mean (a last, shorter span is not favoured or penalized for its length)."""
    return torch.stack([frame_values[first:end].mean() for first, end in spans])


def map_frame_mass(saliency: torch.Tensor) -> torch.Tensor:
    """(T,) float64: each frame's positive saliency summed."""
    return saliency.double().clamp_min(0).sum(dim=(1, 2))


def temporal_mass(frame_values: torch.Tensor, segment: Span) -> float:
    """Share of a per-frame curve's positive mass inside the segment; NaN when it has none."""
    positive = frame_values.double().clamp_min(0)
    total = float(positive.sum())
    return float(positive[segment[0]:segment[1]].sum()) / total if total > 0 else math.nan


def segment_boxes(boxes: Sequence[Box], segment: Span) -> list[Box]:
    """The boxes on frames inside the segment (for S-PT inside it)."""
    return [box for box in boxes if segment[0] <= box[0] < segment[1]]


@dataclass(frozen=True)
class TemporalScores:
    """A video's temporal metrics against its segment (module docstring)."""

    hit_curve: bool
    hit_map: bool
    chance: float
    mass_curve: float
    mass_map: float


def temporal_scores(drops: torch.Tensor, spans: Sequence[Span], saliency: torch.Tensor,
                    segment: Span) -> TemporalScores:
    """Both pointing games, their chance level and both temporal masses of an evidence curve over `spans` and a
    stitched (T, H, W) map."""
    mass = map_frame_mass(saliency)
    return TemporalScores(hit_curve=temporal_pointing(drops, spans, segment),
                          hit_map=temporal_pointing(span_means(mass, spans), spans, segment),
                          chance=pointing_chance(spans, segment),
                          mass_curve=temporal_mass(per_frame(drops, spans), segment),
                          mass_map=temporal_mass(mass, segment))
