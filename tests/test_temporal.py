"""The video-level score, the temporal evidence curve and the temporal metrics, on cases whose answer is known."""

import math

import pytest
import torch

from aosa.kernels.metrics.temporal import (map_frame_mass, per_frame, pointing_chance, segment_boxes, span_means,
                                           temporal_mass, temporal_pointing, temporal_scores)
from aosa.kernels.temporal import (WindowedVideo, evidence_curve, span_length, spans, video_scores, window_logits,
                                   window_probabilities)
from aosa.kernels.windows import window_starts


def summing_model(batch: torch.Tensor) -> torch.Tensor:
    """Logits (B, 2): class 0's is the sum of the clip's values, class 1's is zero (a model linear in its input)."""
    total = batch.sum(dim=(1, 2, 3, 4))
    return torch.stack([total, torch.zeros_like(total)], dim=1)


def test_spans_tile_the_video_in_quarter_clips():
    assert span_length(16) == 4 and span_length(3) == 1
    assert spans(10, 4) == [(0, 4), (4, 8), (8, 10)]


def test_video_score_is_of_the_mean_of_the_windows_logits():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert float(video_scores(logits, 0, "logit")) == pytest.approx(1.0)
    assert float(video_scores(logits, 0, "prob")) == pytest.approx(0.5)
    assert window_probabilities(logits, 0).tolist() == pytest.approx([1 / (1 + math.exp(-2)), 1 / (1 + math.exp(2)),
                                                                       0.5])


def test_evidence_curve_of_a_linear_model_by_hand():
    """With class 0's logit the sum of a window's values and a zero fill, occluding span j lowers the video-level
    (mean) logit by the sum, over the windows touching j, of their values in j, divided by the window count."""
    frames, clip, hop = 22, 8, 4
    video = torch.rand(1, frames, 2, 2, generator=torch.Generator().manual_seed(0)) + 0.5
    starts = window_starts(frames, clip, hop)
    windowed = WindowedVideo(video, starts, clip, window_logits(summing_model, video, starts, clip, batch_size=3))
    curve = evidence_curve(summing_model, windowed, 0, torch.zeros(1, 1, 1, 1), "logit", batch_size=5)
    assert curve.spans == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10), (10, 12), (12, 14), (14, 16), (16, 18),
                           (18, 20), (20, 22)]
    per_frame_sum = video.sum(dim=(0, 2, 3)).double()
    expected = [sum(float(per_frame_sum[max(a, s):min(b, s + clip)].sum()) for s in starts if s < b and s + clip > a)
                / len(starts) for a, b in curve.spans]
    assert curve.drops.tolist() == pytest.approx(expected, rel=1e-5)
    assert curve.clips == sum(len(windowed.touching(span)) for span in curve.spans)
    assert curve.base == pytest.approx(float(window_logits(summing_model, video, starts, clip).mean(0)[0]), rel=1e-6)


def test_temporal_pointing_on_a_constructed_curve():
    tiles = spans(20, 4)  # (0,4) (4,8) (8,12) (12,16) (16,20)
    peak_in_third = torch.tensor([0.1, 0.2, 0.9, 0.3, 0.0])
    assert temporal_pointing(peak_in_third, tiles, (10, 14))        # span (8,12) overlaps frames 10-11
    assert not temporal_pointing(peak_in_third, tiles, (12, 20))
    assert not temporal_pointing(torch.full((5,), 0.4), tiles, (0, 20))  # a constant curve points nowhere
    assert temporal_pointing(torch.tensor([0.5, 0.9, 0.9, 0.0, 0.0]), tiles, (4, 6))  # ties: the first maximum
    assert pointing_chance(tiles, (10, 14)) == pytest.approx(2 / 5)


def test_temporal_mass_counts_positive_mass_inside_the_segment():
    values = torch.tensor([1.0, -5.0, 2.0, 3.0, 0.0])
    assert temporal_mass(values, (2, 4)) == pytest.approx(5 / 6)
    assert math.isnan(temporal_mass(torch.tensor([-1.0, 0.0]), (0, 1)))
    assert per_frame(torch.tensor([1.0, 2.0]), [(0, 3), (3, 4)]).tolist() == [1, 1, 1, 2]
    assert span_means(torch.tensor([1.0, 3.0, 6.0]), [(0, 2), (2, 3)]).tolist() == [2, 6]


def test_map_scores_point_where_the_mass_is():
    saliency = torch.zeros(12, 3, 3)
    saliency[8:10, 1, 1] = 5.0
    saliency[0, 0, 0] = -7.0  # negative mass counts for nothing
    assert map_frame_mass(saliency).tolist()[8] == 5.0
    scores = temporal_scores(torch.tensor([0.0, 0.0, 1.0]), spans(12, 4), saliency, (8, 12))
    assert scores.hit_curve and scores.hit_map and scores.mass_map == 1.0 and scores.mass_curve == 1.0
    assert scores.chance == pytest.approx(1 / 3)
    assert segment_boxes([(3, 0, 0, 1, 1), (8, 0, 0, 1, 1), (12, 0, 0, 1, 1)], (8, 12)) == [(8, 0, 0, 1, 1)]


def test_random_maps_point_in_time_at_chance():
    """Uniform random maps over videos of random length and segment hit the segment about as often as its share of
    the spans (mean chance), well within 4 standard errors over 600 videos."""
    generator = torch.Generator().manual_seed(7)
    hits, chances = [], []
    for _ in range(600):
        frames = int(torch.randint(64, 257, (1,), generator=generator))
        length = int(torch.randint(16, 24, (1,), generator=generator))
        first = int(torch.randint(0, frames - length + 1, (1,), generator=generator))
        tiles = spans(frames, 4)
        scores = temporal_scores(torch.rand(len(tiles), generator=generator), tiles,
                                 torch.rand(frames, 4, 4, generator=generator), (first, first + length))
        hits.append(scores.hit_map)
        chances.append(scores.chance)
    rate, chance = sum(hits) / len(hits), sum(chances) / len(chances)
    assert abs(rate - chance) < 4 * math.sqrt(chance * (1 - chance) / len(hits))
