"""A whole-video unit's own metrics (`aosa evaluate --clips all|every:HOP`), beside the first clip's, as the
metrics row's video columns: the windows and their probabilities, the evidence curve, S-PT over the whole video
and inside the segment, and the temporal pointing games and masses against the manifest's segment."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aosa.engine.runtime.whole import WholeExplanation
from aosa.kernels.metrics import Pointing, pointing_game
from aosa.kernels.metrics.pointing import Box
from aosa.kernels.metrics.temporal import TemporalScores, segment_boxes, temporal_scores
from aosa.kernels.temporal import span_length


@dataclass(frozen=True)
class VideoMetrics:
    """What a whole-video row holds beyond the first clip's metrics; segment scores are None without a segment,
    pointing ones without boxes."""

    clips: str
    explanation: WholeExplanation
    segment: tuple[int, int] | None
    video_pointing: Pointing | None
    segment_pointing: Pointing | None
    temporal: TemporalScores | None

    @classmethod
    def of(cls, clips: str, explanation: WholeExplanation, boxes: list[Box] | None,
           segment: tuple[int, int] | None) -> VideoMetrics:
        """Score a stitched map and its evidence curve against the video's model-pixel boxes and segment."""
        saliency = torch.from_numpy(explanation.saliency)
        evidence = explanation.evidence
        temporal = None if segment is None else temporal_scores(evidence.drops, evidence.spans, saliency, segment)
        return cls(clips, explanation, segment, None if boxes is None else pointing_game(saliency, boxes),
                   None if boxes is None or segment is None else pointing_game(saliency, segment_boxes(boxes, segment)),
                   temporal)

    def columns(self) -> dict[str, Any]:
        """The metrics row's video columns (schemas.tables.METRICS)."""
        e, t = self.explanation, self.temporal
        return {
            "clips": self.clips, "hop": e.hop, "video_frames": int(e.saliency.shape[0]),
            "window_starts": [w.start for w in e.windows], "window_scores": [w.probability for w in e.windows],
            "evidence_span": span_length(e.clip), "evidence_curve": e.evidence.drops.tolist(),
            "segment_start": self.segment[0] if self.segment else None,
            "segment_end": self.segment[1] if self.segment else None,
            "spt_video_hits": _hits(self.video_pointing), "spt_video_frames": _frames(self.video_pointing),
            "spt_segment_hits": _hits(self.segment_pointing), "spt_segment_frames": _frames(self.segment_pointing),
            "tpt_curve": t.hit_curve if t else None, "tpt_map": t.hit_map if t else None,
            "tpt_chance": t.chance if t else None, "tmass_curve": t.mass_curve if t else None,
            "tmass_map": t.mass_map if t else None,
        }


def _hits(pointing: Pointing | None) -> int | None:
    return None if pointing is None else pointing.hits


def _frames(pointing: Pointing | None) -> int | None:
    return None if pointing is None else pointing.frames
