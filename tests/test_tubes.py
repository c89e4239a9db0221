"""Anchors, tracks, tube boxes and the box arithmetic of TubeSet, against dense references."""

import pytest
import torch

from aosa.kernels.anchors import grid_anchors
from aosa.kernels.cooccurrence import cooccurrence_groups
from aosa.kernels.tracks import track_points
from aosa.kernels.tubes import TubeSet, cuboid_tubes, tube_boxes, window_starts
from aosa.schemas.method_params import ParamsError


def constant_flow(frames: int, height: int, width: int, dx: float, dy: float) -> torch.Tensor:
    flow = torch.zeros(frames - 1, height, width, 2)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


def dense_mask(tubes: TubeSet, i: int) -> torch.Tensor:
    """Reference: paint every box of every tube of group i into a dense array, one voxel loop at a time."""
    mask = torch.zeros(tubes.frames, tubes.height, tubes.width, dtype=torch.bool)
    for tube in tubes.groups[i].tolist():
        for t, (y0, y1, x0, x1) in enumerate(tubes.boxes[tube].tolist()):
            mask[t, y0:y1, x0:x1] = True
    return mask


def random_tubes(seed: int = 0, top_k: int = 3) -> TubeSet:
    generator = torch.Generator().manual_seed(seed)
    flow = torch.randn(7, 40, 48, 2, generator=generator) * 3
    tracks, alive = track_points(grid_anchors(40, 48, 8), flow)
    boxes = tube_boxes(tracks, alive, 12, 40, 48)
    return TubeSet(boxes, cooccurrence_groups(tracks, top_k), 40, 48)


def test_anchors_are_grid_centres_from_half_stride():
    anchors = grid_anchors(112, 112, 8)
    assert anchors.shape == (196, 2)
    assert sorted(set(anchors[:, 0].tolist())) == list(range(4, 112, 8))
    assert anchors[1].tolist() == [12.0, 4.0]  # row-major: x varies fastest


def test_tracks_follow_constant_flow_and_die_outside():
    flow = constant_flow(6, 32, 32, dx=3.0, dy=-1.0)
    points = torch.tensor([[4.0, 20.0], [28.0, 10.0]])
    tracks, alive = track_points(points, flow)
    expected = points[0] + torch.arange(6)[:, None] * torch.tensor([3.0, -1.0])
    assert torch.allclose(tracks[0], expected)
    assert alive[0].all()
    # x = 28, 31, 34: the second point leaves the 32 px frame at frame 2 and stays dead, frozen.
    assert alive[1].tolist() == [True, True, False, False, False, False]
    assert torch.equal(tracks[1, 2:], tracks[1, 1].expand(4, 2))


def test_dead_point_stops_occluding():
    flow = constant_flow(6, 32, 32, dx=3.0, dy=0.0)
    tracks, alive = track_points(torch.tensor([[28.0, 16.0]]), flow)
    tubes = TubeSet(tube_boxes(tracks, alive, 8, 32, 32), torch.tensor([[0]]), 32, 32)
    mask = tubes.masks(torch.tensor([0]))[0]
    assert mask[0].any() and mask[1].any()
    assert not mask[2:].any()


def test_tube_box_is_centred_and_clipped():
    tracks = torch.tensor([[[10.0, 10.0], [1.4, 30.6]]])
    boxes = tube_boxes(tracks, torch.ones(1, 2, dtype=torch.bool), 16, 32, 32)
    assert boxes[0, 0].tolist() == [2, 18, 2, 18]      # rows/cols [c - 8, c + 8)
    assert boxes[0, 1].tolist() == [23, 32, 0, 9]      # centre (1, 31) clipped at both edges


def test_masks_are_unions_of_group_tubes():
    tubes = random_tubes()
    index = torch.tensor([0, 5, 17, 29])
    masks = tubes.masks(index)
    for row, i in enumerate(index.tolist()):
        assert torch.equal(masks[row], dense_mask(tubes, i))


@pytest.mark.parametrize("repeat", [1, 3])
def test_weights_are_the_masks_as_0_1_floats_each_column_repeated(repeat: int):
    """What a channels-last batch's lerp reads: mask voxel (t, y, x) at columns x*repeat .. x*repeat + repeat-1."""
    tubes = random_tubes(seed=1)
    index = torch.tensor([2, 11, 29])
    out = torch.full((3, tubes.frames, tubes.height, tubes.width * repeat), 7.0)
    weights = tubes.weights(index, out, repeat)
    assert weights.data_ptr() == out.data_ptr()
    dense = torch.stack([dense_mask(tubes, i) for i in index.tolist()]).float()
    assert torch.equal(weights, dense.repeat_interleave(repeat, dim=-1))


def test_box_arithmetic_matches_dense_masks():
    tubes = random_tubes(seed=3, top_k=4)
    voxels = torch.randn(tubes.frames, tubes.height, tubes.width, dtype=torch.float64)
    values = torch.randn(len(tubes), dtype=torch.float64)
    dense = torch.stack([dense_mask(tubes, i) for i in range(len(tubes))]).double()
    assert torch.allclose(tubes.sums(voxels), (dense * voxels).sum(dim=(1, 2, 3)))
    assert torch.allclose(tubes.volumes(), dense.sum(dim=(1, 2, 3)))
    assert torch.allclose(tubes.paint(values), torch.einsum("n,nthw->thw", values, dense))


def test_window_starts_follow_captum_rule():
    assert window_starts(112, 16, 8) == list(range(0, 97, 8))  # 13 positions, last ends at 112
    assert window_starts(10, 4, 4) == [0, 4, 8]                # last window runs past the end
    cuboids = cuboid_tubes(16, 112, 112, (8, 16, 16), (4, 8, 8))
    assert len(cuboids) == 3 * 13 * 13
    assert cuboids.masks(torch.tensor([0]))[0].sum() == 8 * 16 * 16


def test_a_stride_that_leaves_no_anchor_is_a_parameter_error():
    assert grid_anchors(16, 16, 31).shape == (1, 2)  # the first anchor at 15 still fits
    with pytest.raises(ParamsError, match="stride 32 leaves no anchor in a 16x16 frame"):
        grid_anchors(16, 16, 32)
