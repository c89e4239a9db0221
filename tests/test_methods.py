"""Explanation methods against cases whose answer is known independently of the implementation."""

import cv2
import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from scipy.stats import spearmanr
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from aosa.engine.io.flow import compute_flow
from aosa.kernels.anchors import grid_anchors
from aosa.kernels.methods import METHODS, get_method
from aosa.kernels.methods.aosa import adaptive_tubes
from aosa.kernels.methods.osa import osa_window
from aosa.kernels.scoring import target_scores
from aosa.kernels.space import InputSpace
from aosa.kernels.tracks import track_points
from aosa.schemas.method_params import MethodParams
from tests.seeding import seeded


def tiny_cnn(classes: int = 4, seed: int = 0, stride: int = 1) -> torch.nn.Module:
    with seeded(seed):
        return torch.nn.Sequential(
            torch.nn.Conv3d(3, 4, 3, stride=stride, padding=1), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool3d((2, 2, 2)), torch.nn.Flatten(), torch.nn.Linear(32, classes)).eval()


def linear_model(shape: tuple[int, ...], classes: int = 3) -> torch.nn.Module:
    with seeded(1):
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(int(np.prod(shape)), classes)).eval()


def test_registry_and_uniform_call_shape():
    clip = torch.randn(3, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    flow = torch.zeros(3, 24, 24, 2)
    params = MethodParams(stride=8, mask=8, batch_size=8, iterations=5)  # STEP's shape, not its convergence
    for name, cls in METHODS.items():
        if name == "rollout":  # needs a divided space-time transformer: tests/test_timesformer.py
            continue
        explainer = cls(tiny_cnn(), params)
        saliency = explainer.attribute(clip, target=1, flow=flow)
        assert saliency.shape == (4, 24, 24) and saliency.dtype == torch.float32, name
        assert torch.isfinite(saliency).all() and saliency.abs().max() > 0, name
        builds_masks = name in ("aosa", "aosa-approx", "osa")  # a run's `masks` stage: their tube building
        assert (explainer.mask_seconds is not None) == builds_masks, name
        expected = (len(grid_anchors(24, 24, 8)) if name in ("aosa", "aosa-approx") else
                    len(cls.tubes(params, clip, flow)) if name == "osa" else 0)
        assert explainer.mask_count == expected, name
    with pytest.raises(ValueError, match="unknown method 'gradcam2'"):
        get_method("gradcam2")
    with pytest.raises(ValueError, match="top_k must be between 0 and 8"):
        MethodParams(top_k=9)
    with pytest.raises(ValueError, match="needs the clip's optical flow"):
        get_method("aosa")(tiny_cnn(), params).attribute(clip, target=1)


def test_static_clip_tubes_are_cuboids_and_top_k_has_no_effect():
    clip = torch.randn(3, 4, 64, 64)
    still = torch.zeros(3, 64, 64, 2)
    tubes = adaptive_tubes(still, MethodParams(stride=8, mask=16))
    assert torch.equal(tubes.boxes, tubes.boxes[:, :1].expand_as(tubes.boxes))
    assert tubes.boxes[:, :, 1].gt(tubes.boxes[:, :, 0]).all()  # alive in every frame
    single = get_method("aosa")(tiny_cnn(), MethodParams(stride=8, mask=16, top_k=0)).attribute(clip, 2, still)
    integrated = get_method("aosa")(tiny_cnn(), MethodParams(stride=8, mask=16, top_k=3)).attribute(clip, 2, still)
    assert torch.equal(single, integrated)


def test_static_clip_coverage_and_rise_rank_interior_voxels_identically():
    clip = torch.randn(3, 4, 64, 64)
    still = torch.zeros(3, 64, 64, 2)
    maps = {mode: get_method("aosa")(tiny_cnn(), MethodParams(stride=8, mask=16, aggregate=mode))
            .attribute(clip, 2, still) for mode in ("coverage", "rise")}
    inner = (slice(None), slice(16, 48), slice(16, 48))  # at least h = 16 px from every border
    coverage, rise = maps["coverage"][inner].flatten().numpy(), maps["rise"][inner].flatten().numpy()
    assert coverage.std() > 0
    assert spearmanr(coverage, rise).statistic > 0.99999
    assert np.corrcoef(coverage, rise)[0, 1] > 0.99999
    everywhere = spearmanr(maps["coverage"].flatten(), maps["rise"].flatten()).statistic
    assert everywhere < 0.9999  # near borders the two differ by design


@pytest.mark.parametrize("fill", ["mean", "zero", "blur"])
@pytest.mark.parametrize("aggregate", ["coverage", "rise"])
def test_approx_equals_exact_for_a_linear_model(fill, aggregate):
    shape = (3, 6, 32, 32)  # float64: the maths is exact, so float32's rounding of logit differences stays out
    model = linear_model(shape).double()
    generator = torch.Generator().manual_seed(5)
    clip = torch.randn(shape, generator=generator, dtype=torch.float64)
    flow = torch.randn(5, 32, 32, 2, generator=generator) * 2
    space = InputSpace(mean=(0.4, 0.4, 0.4), std=(0.2, 0.2, 0.2))
    params = MethodParams(stride=8, mask=12, top_k=3, fill=fill, score="logit", relu=False, aggregate=aggregate)
    exact = get_method("aosa")(model, params, space).attribute(clip, 1, flow)
    approx = get_method("aosa-approx")(model, params, space).attribute(clip, 1, flow)
    assert exact.abs().max() > 0
    torch.testing.assert_close(approx, exact, rtol=1e-4, atol=1e-5 * float(exact.abs().max()))


def test_relu_keeps_only_score_drops():
    shape = (3, 6, 32, 32)
    generator = torch.Generator().manual_seed(0)  # an input whose signed map has drops of both signs
    clip, flow = torch.randn(shape, generator=generator), torch.randn(5, 32, 32, 2, generator=generator)
    model = linear_model(shape)
    params = MethodParams(stride=8, mask=12, fill="mean", score="logit")
    relu = get_method("aosa-approx")(model, params).attribute(clip, 1, flow)
    signed = get_method("aosa-approx")(model, MethodParams(**{**params.to_dict(), "relu": False})).attribute(clip, 1, flow)
    assert relu.min() >= 0 and signed.min() < 0
    assert not torch.allclose(relu, signed)


@pytest.mark.parametrize("score", ["prob", "logit"])
def test_osa_equals_captum_occlusion(score):
    model = tiny_cnn(classes=3)
    clip = torch.randn(3, 8, 32, 32)
    ours = get_method("osa")(model, MethodParams(score=score, batch_size=64)).attribute(clip, 2)
    window = osa_window(8, 32, 32)
    assert window == (4, 5, 5)
    captum = Occlusion(lambda x: target_scores(model(x), 2, score)).attribute(
        clip.unsqueeze(0), sliding_window_shapes=(3, *window), strides=(3, 2, 2, 2), baselines=0.0,
        perturbations_per_eval=64)
    torch.testing.assert_close(ours, captum[0, 0], rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(captum[0, 0], captum[0, 2])


def moving_square_video(frames: int = 8, size: int = 64, side: int = 12, speed: int = 3):
    """Textured static background with a textured square moving right; returns frames and per-frame boxes."""
    rng = np.random.default_rng(0)
    background = (rng.random((size, size, 3)) * 120).astype(np.uint8)
    patch = (135 + rng.random((side, side, 3)) * 120).astype(np.uint8)
    video, boxes = [], []
    for t in range(frames):
        frame = background.copy()
        y0, x0 = 26, 6 + speed * t
        frame[y0:y0 + side, x0:x0 + side] = patch
        video.append(frame)
        boxes.append((y0, y0 + side, x0, x0 + side))
    return np.stack(video), boxes


def test_aosa_peaks_on_the_only_region_the_model_looks_at():
    video, boxes = moving_square_video()
    clip = torch.from_numpy(video).permute(3, 0, 1, 2).float() / 255
    weight = torch.zeros_like(clip)
    for t, (y0, y1, x0, x1) in enumerate(boxes):
        weight[:, t, y0:y1, x0:x1] = 1.0 / weight[:, t, y0:y1, x0:x1].numel()

    def region_model(batch: torch.Tensor) -> torch.Tensor:
        looked_at = (batch * weight).flatten(1).sum(1)
        return torch.stack([looked_at, torch.zeros_like(looked_at)], dim=1)

    flow = compute_flow(video, "farneback")
    params = MethodParams(stride=4, mask=8, top_k=3, score="logit")
    saliency = get_method("aosa")(region_model, params).attribute(clip, 0, flow)
    hits = 0
    for t, (y0, y1, x0, x1) in enumerate(boxes):
        y, x = np.unravel_index(int(saliency[t].argmax()), saliency[t].shape)
        hits += (y0 <= y < y1) and (x0 <= x < x1)
    assert hits >= 0.75 * len(boxes), f"peak inside the region in {hits}/{len(boxes)} frames"


class LargestTensor(TorchDispatchMode):
    """Records the largest tensor any torch op creates while active."""

    def __init__(self) -> None:
        super().__init__()
        self.numel, self.shape = 0, ()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and leaf.numel() > self.numel:
                self.numel, self.shape = leaf.numel(), tuple(leaf.shape)
        return out


@pytest.mark.parametrize(("name", "incremental"), [("aosa", "off"), ("aosa", "on"), ("aosa-approx", "auto")])
def test_no_dense_mask_array_for_196_masks(name, incremental):
    """No N x T x H x W mask array; dense maps hold at most one occluded batch at a time (incremental maps hold
    patches of every mask of a plan instead, bounded by the plan's memory)."""
    with seeded(5):
        clip, flow = torch.randn(3, 16, 112, 112), torch.randn(15, 112, 112, 2)
    batch = 8
    method = get_method(name)(tiny_cnn(stride=2), MethodParams(batch_size=batch, incremental=incremental))
    with LargestTensor() as largest:
        saliency = method.attribute(clip, 0, flow)
    assert saliency.shape == (16, 112, 112)
    dense_masks = 196 * 16 * 112 * 112  # N x T x H x W, one channel only
    if incremental != "on":
        assert largest.numel <= batch * clip.numel(), f"largest tensor {largest.shape}"
    assert largest.numel < dense_masks / 4, f"largest tensor {largest.shape}"


def translating_texture(frames: int, size: int, dx: int, dy: int) -> np.ndarray:
    """Frames cropped from a larger smoothed-noise canvas, shifted by (dx, dy) px per frame."""
    rng = np.random.default_rng(3)
    canvas = cv2.GaussianBlur((rng.random((size + 80, size + 80)) * 255).astype(np.uint8), (5, 5), 1.5)
    crops = [canvas[40 - dy * t:40 - dy * t + size, 40 - dx * t:40 - dx * t + size] for t in range(frames)]
    return np.repeat(np.stack(crops)[..., None], 3, axis=3)


def test_tracks_follow_a_translating_pattern_within_a_pixel():
    video = translating_texture(frames=8, size=96, dx=2, dy=1)
    tracks, alive = track_points(grid_anchors(96, 96, 8), compute_flow(video, "farneback"))
    expected = tracks[:, :1] + torch.arange(8)[None, :, None] * torch.tensor([2.0, 1.0])
    interior = (tracks[:, 0] >= 16).all(1) & (tracks[:, 0] < 64).all(1)  # stays 16 px clear of the edges
    assert interior.sum() >= 16 and alive[interior].all()
    error = (tracks[interior] - expected[interior]).norm(dim=-1)
    assert error.max() < 1.0, f"largest tracking error {error.max():.2f} px"


def test_flow_of_a_static_video_gives_cuboid_tubes():
    still = translating_texture(frames=6, size=64, dx=0, dy=0)
    tubes = adaptive_tubes(compute_flow(still, "farneback"), MethodParams(stride=8, mask=16))
    assert torch.equal(tubes.boxes, tubes.boxes[:, :1].expand_as(tubes.boxes))
