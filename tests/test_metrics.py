"""Metrics against cases whose answer is known independently of the implementation."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from aosa.kernels.filters import blur_frames
from aosa.kernels.metrics import (Faithfulness, Pointing, auc, box_energy, cascade_layers, cascade_randomization,
                             curve_points, dataset_pointing, deletion_curve, faithfulness, insertion_curve,
                             pointing_game, rank_order, spearman)
from aosa.kernels.scoring import ScoreFunction
from tests.seeding import seeded


class LinearScore:
    """Score = sum of weight * x over all elements; records the batch sizes it was called with."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0) -> None:
        self.weight = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        self.batches: list[int] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.batches.append(batch.shape[0])
        return (batch.double() * self.weight).flatten(1).sum(1)


class InformativeVoxels(torch.nn.Module):
    """logits = [k * (sum of x over S - m / 2), 0]: class 0 is certain with S at 1, impossible with S at 0."""

    def __init__(self, voxels: list[tuple[int, int, int]], channels: int, k: float = 5.0) -> None:
        super().__init__()
        self.voxels, self.k, self.half = voxels, k, len(voxels) * channels / 2

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        s = sum(batch[:, :, t, y, x].sum(1) for t, y, x in self.voxels)
        return torch.stack([self.k * (s - self.half), torch.zeros_like(s)], 1)


def test_auc_formula():
    assert auc(torch.linspace(1, 0, 29)) == pytest.approx(0.5)
    assert auc(torch.full((29,), 0.3)) == pytest.approx(0.3)
    assert auc(torch.tensor([1.0, 0, 0])) == pytest.approx(0.25)   # (1 - 0.5) / 2
    assert auc(torch.tensor([0.0, 1, 1, 0])) == pytest.approx(2 / 3)


def test_rank_order_descending_with_stable_ties():
    assert rank_order(torch.tensor([1.0, 2, 2, 0, 2])).tolist() == [1, 2, 4, 0, 3]
    assert rank_order(torch.zeros(2, 3, 4)).tolist() == list(range(24))


@pytest.mark.parametrize(("shape", "per_step"), [((1, 7, 8), 2), ((1, 10, 11), 4)])  # 110 voxels: last step moves 2
def test_constant_map_moves_ceil_voxels_per_step_in_raster_order(shape, per_step):
    clip = torch.randn(3, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    score = LinearScore(clip.shape)
    voxel_terms = (clip * score.weight).sum(0).flatten()                # each voxel's contribution, raster order
    blurred_terms = (blur_frames(clip) * score.weight).sum(0).flatten()
    moved = [min(per_step * k, voxel_terms.numel()) for k in range(29)]
    expected_deletion = torch.stack([voxel_terms[m:].sum() for m in moved])
    expected_insertion = torch.stack([voxel_terms[:m].sum() + blurred_terms[m:].sum() for m in moved])
    saliency = torch.zeros(shape)
    deletion, insertion = deletion_curve(score, clip, saliency), insertion_curve(score, clip, saliency)
    assert deletion.shape == insertion.shape == (29,)
    torch.testing.assert_close(deletion, expected_deletion)
    torch.testing.assert_close(insertion, expected_insertion)
    assert deletion[-1] == 0 and deletion[-2] != 0


def test_informative_voxels_deleted_first_or_last():
    channels, shape = 3, (2, 14, 14)                      # THW = 392 = 28 * 14: 14 voxels a step
    voxels = [(0, 6, 6), (0, 6, 7), (0, 7, 6), (0, 7, 7)]
    clip = torch.zeros(channels, *shape)
    informative = torch.zeros(shape)
    for t, y, x in voxels:
        clip[:, t, y, x] = 1
        informative[t, y, x] = 1
    score = ScoreFunction(InformativeVoxels(voxels, channels), target=0)
    right, reversed_ = faithfulness(score, clip, informative), faithfulness(score, clip, 1 - informative)
    certain, impossible = torch.ones(28), torch.zeros(28)
    torch.testing.assert_close(right.deletion, torch.cat([torch.ones(1), impossible]), atol=1e-6, rtol=0)
    torch.testing.assert_close(right.insertion, torch.cat([torch.zeros(1), certain]), atol=1e-6, rtol=0)
    torch.testing.assert_close(reversed_.deletion, torch.cat([certain, torch.zeros(1)]), atol=1e-6, rtol=0)
    torch.testing.assert_close(reversed_.insertion, torch.cat([impossible, torch.ones(1)]), atol=1e-6, rtol=0)
    assert right.deletion_auc == pytest.approx(0.5 / 28, abs=1e-6)
    assert right.insertion_auc == pytest.approx(27.5 / 28, abs=1e-6)
    assert reversed_.deletion_auc == pytest.approx(27.5 / 28, abs=1e-6)
    assert right.overall == pytest.approx(27 / 28, abs=1e-6)
    assert reversed_.overall == pytest.approx(-27 / 28, abs=1e-6)


def test_batching_does_not_change_results_and_bounds_batches():
    clip = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    saliency = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(4))
    one, sixteen = LinearScore(clip.shape), LinearScore(clip.shape)
    a, b = faithfulness(one, clip, saliency, batch_size=1), faithfulness(sixteen, clip, saliency)
    torch.testing.assert_close(a.deletion, b.deletion)
    torch.testing.assert_close(a.insertion, b.insertion)
    assert a.overall == pytest.approx(b.overall)
    # the invariant, not today's split: 58 passes in all (29 per curve), none above the batch size
    assert one.batches == [1] * 58
    assert sum(sixteen.batches) == 58 and max(sixteen.batches) <= 16 and len(sixteen.batches) < 58
    with pytest.raises(ValueError, match="does not match"):
        faithfulness(one, clip, saliency[:2])


class ChannelsLastScore(LinearScore):
    """A LinearScore that asks for channels-last batches (as a zoo CNN on a CPU does) and checks it gets them."""

    batch_format = torch.channels_last_3d

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        assert batch.is_contiguous(memory_format=torch.channels_last_3d)
        return super().__call__(batch)


def test_curves_in_channels_last_batches_equal_the_contiguous_ones():
    clip = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    saliency = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(6))
    contiguous = faithfulness(LinearScore(clip.shape), clip, saliency, batch_size=5)
    channels_last = faithfulness(ChannelsLastScore(clip.shape), clip, saliency, batch_size=5)
    assert torch.equal(channels_last.deletion, contiguous.deletion)
    assert torch.equal(channels_last.insertion, contiguous.insertion)


def peaked(shape: tuple[int, int, int], peaks: dict[int, tuple[int, int]]) -> np.ndarray:
    """A map that is 0 except 1 at (x, y) in the given frames."""
    maps = np.zeros(shape, dtype=np.float32)
    for frame, (x, y) in peaks.items():
        maps[frame, y, x] = 1
    return maps


def test_pointing_tolerance_is_inclusive_at_seven_pixels():
    box = (20.0, 20.0, 30.0, 30.0)                         # pixels 20..29 on both axes
    maps = peaked((4, 40, 40), {0: (13, 25), 1: (12, 25), 2: (15, 15), 3: (36, 29)})
    result = pointing_game(maps, [(f, *box) for f in range(4)])
    assert result == Pointing(hits=2, frames=4)           # 7 px left hits, 8 px misses, sqrt(50) misses, 7 px right
    for frame, hit in enumerate([True, False, False, True]):
        assert pointing_game(maps, [(frame, *box)]).hits == hit


def test_pointing_skips_unboxed_frames_and_constant_maps_miss():
    maps = peaked((5, 16, 16), {0: (3, 3), 2: (3, 3)})
    maps[3] = 0.5                                          # constant frame
    boxes = [(0, 0, 0, 4, 4), (3, 0, 0, 16, 16), (4, 2, 2, 2, 9), (9, 0, 0, 4, 4)]
    assert pointing_game(torch.from_numpy(maps), boxes) == Pointing(hits=1, frames=2)
    assert math.isnan(Pointing(0, 0).rate)


def test_pointing_does_not_swap_x_and_y_and_any_box_hits():
    maps = peaked((1, 100, 100), {0: (50, 10)})           # peak at x=50, y=10
    tall, wide = (0, 48.0, 0.0, 52.0, 100.0), (0, 0.0, 48.0, 100.0, 52.0)
    assert pointing_game(maps, [tall]).hits == 1
    assert pointing_game(maps, [wide]).hits == 0
    assert pointing_game(maps, [wide, tall]) == Pointing(hits=1, frames=1)


def test_pointing_argmax_is_first_in_raster_order():
    maps = np.zeros((1, 30, 30), dtype=np.float32)
    maps[0, 2, 25] = maps[0, 20, 1] = 1                   # (x=25, y=2) comes first in raster order
    assert pointing_game(maps, [(0, 20.0, 0.0, 30.0, 5.0)]).hits == 1
    assert pointing_game(maps, [(0, 0.0, 18.0, 3.0, 22.0)]).hits == 0


def test_pointing_exclusive_far_edges_and_fractional_boxes():
    maps = peaked((1, 40, 40), {0: (37, 5)})
    assert pointing_game(maps, [(0, 0.0, 0.0, 31.0, 10.0)]).hits == 1   # last pixel inside x = 30: distance 7
    assert pointing_game(maps, [(0, 0.0, 0.0, 30.5, 10.0)]).hits == 1   # 30 < 30.5: pixel 30 still inside
    assert pointing_game(maps, [(0, 0.0, 0.0, 30.0, 10.0)]).hits == 0   # x1 exclusive: last pixel 29, distance 8
    assert pointing_game(maps, [(0, 0.0, 12.5, 40.0, 20.0)]).hits == 0  # first row inside y = 13: distance 8
    assert pointing_game(maps, [(0, 0.0, 12.0, 40.0, 20.0)]).hits == 1


def test_dataset_pointing_pooled_and_class_mean():
    per_video = [("a", Pointing(9, 10)), ("a", Pointing(1, 10)), ("b", Pointing(0, 5)), ("c", Pointing(0, 0))]
    pooled, class_mean = dataset_pointing(per_video)
    assert pooled == pytest.approx(10 / 25)
    assert class_mean == pytest.approx((10 / 20 + 0 / 5) / 2)
    assert all(math.isnan(v) for v in dataset_pointing([]))


def test_spearman_matches_scipy_with_ties():
    generator = torch.Generator().manual_seed(5)
    a = torch.randint(0, 6, (3, 40), generator=generator).float()
    b = a + torch.randint(0, 4, (3, 40), generator=generator).float()
    assert spearman(a, b) == pytest.approx(spearmanr(a.flatten(), b.flatten()).statistic, abs=1e-12)
    c = torch.rand(120, generator=generator)
    assert spearman(a, c) == pytest.approx(spearmanr(a.flatten(), c).statistic, abs=1e-12)
    assert spearman(c, c) == pytest.approx(1.0)
    assert spearman(c, -c) == pytest.approx(-1.0)


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        with seeded(0):
            self.conv = torch.nn.Conv3d(3, 4, 3, padding=1)
            self.fc = torch.nn.Linear(32, 3)
        self.pool = torch.nn.AdaptiveAvgPool3d((2, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


def gradient_map(model: torch.nn.Module) -> torch.Tensor:
    """Plain gradient saliency |d logit_1 / dx| summed over channels, for a fixed clip."""
    clip = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(6)).requires_grad_()
    model(clip[None])[0, 1].backward()
    return clip.grad.abs().sum(0)


def test_cascade_randomization_decorrelates_and_leaves_model_untouched():
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    results = cascade_randomization(model, gradient_map)
    assert cascade_layers(model) == ["fc", "conv"]
    assert [name for name, _ in results] == ["fc", "conv"]
    assert all(corr < 0.9 for _, corr in results)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert torch.equal(rng_before, torch.get_rng_state())
    assert cascade_randomization(model, gradient_map) == results
    assert [name for name, _ in cascade_randomization(model, gradient_map, layers=["conv"])] == ["conv"]


def test_rank_correlation_of_a_constant_map_is_defined():
    varied = torch.arange(12.0).reshape(3, 4)
    flat = torch.full((3, 4), 0.5)
    assert spearman(varied, flat) == spearman(flat, varied) == 0.0  # ranks nothing: no agreement
    assert spearman(flat, torch.zeros(3, 4)) == 1.0  # both flat: the same (empty) ranking
    assert spearman(varied, 2 * varied + 1) == pytest.approx(1.0)


def test_curve_shards_scored_apart_join_into_the_whole_curves():
    clip = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    saliency = torch.rand(4, 8, 8, generator=torch.Generator().manual_seed(8))
    score = LinearScore(clip.shape)
    whole = faithfulness(score, clip, saliency)
    for curve, expected in (("deletion", whole.deletion), ("insertion", whole.insertion)):
        shards = [curve_points(score, clip, saliency, curve, points) for points in torch.arange(29).split(10)]
        torch.testing.assert_close(torch.cat(shards), expected)
    assert Faithfulness.of(whole.deletion, whole.insertion) == whole
    with pytest.raises(ValueError, match="unknown curve 'sideways'"):
        curve_points(score, clip, saliency, "sideways", torch.arange(3))


def test_box_energy_is_the_positive_mass_inside_boxes_of_boxed_frames():
    maps = np.zeros((3, 10, 12), dtype=np.float32)
    maps[0, 2, 3] = 3.0                                    # inside frame 0's box (x 2..5, y 1..3)
    maps[0, 8, 10] = 1.0                                   # outside it, same frame
    maps[0, 9, 0] = -5.0                                   # negative: no mass
    maps[1] = 7.0                                          # a frame without a box is not counted
    maps[2, 0, 0] = 2.0                                    # frame 2's box (x1 exclusive) ends before x=6
    boxes = [(0, 2.0, 1.0, 6.0, 4.0), (2, 6.0, 0.0, 12.0, 10.0)]
    assert box_energy(maps, boxes) == pytest.approx(3.0 / 6.0)
    assert box_energy(torch.from_numpy(maps), boxes[:1]) == pytest.approx(0.75)
    assert math.isnan(box_energy(np.zeros((2, 4, 4)), [(0, 0, 0, 4, 4)]))
