"""STEP (spatio-temporal extremal perturbation): known answers on models that look at one known region."""

import numpy as np
import pytest
import torch

from aosa.engine.datasets.manifests import iter_manifest
from aosa.engine.datasets.synthetic import write_benchmark
from aosa.jobs.explain import main as explain_cli
from aosa.kernels.methods import METHODS, get_method
from aosa.kernels.metrics.pointing import pointing_game
from aosa.kernels.methods.step import STEP, SmoothMask, ellipsoid, step_mismatch
from aosa.schemas.method_params import MethodParams, ParamsError

SHAPE = (3, 8, 32, 32)
BOX = (slice(1, 7), slice(8, 18), slice(16, 26))  # (t, y, x): 6 frames x 10 x 10 px, 7.3% of the clip


def region_clip(seed: int = 0) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed))


class RegionModel(torch.nn.Module):
    """Logits (10 s - 10, 0), s = correlation of the input with `clip` inside BOX (1 for the clip itself): only the
    box matters, blurring it away costs about 10 nats, and every voxel of it counts (p < 1/2 never saturates)."""

    def __init__(self, clip: torch.Tensor) -> None:
        super().__init__()
        weight = torch.zeros(SHAPE)
        weight[(slice(None), *BOX)] = 1
        self.register_buffer("template", clip * weight / (clip * clip * weight).sum())
        self.scale = torch.nn.Parameter(torch.tensor(10.0))  # a parameter, to check STEP leaves it alone

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        score = self.scale * (batch * self.template).flatten(1).sum(1) - 10
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def inside_box() -> torch.Tensor:
    inside = torch.zeros(SHAPE[1:], dtype=torch.bool)
    inside[BOX] = True
    return inside


def test_registered_with_the_common_call_shape():
    assert get_method("step") is STEP and METHODS["step"].name == "step" and not STEP.needs_flow
    saliency = STEP(RegionModel(region_clip()), MethodParams(iterations=3)).attribute(region_clip(), target=0)
    assert saliency.shape == SHAPE[1:] and saliency.dtype == torch.float32
    assert torch.isfinite(saliency).all() and 0 <= saliency.min() and saliency.max() <= 4  # four areas' masks


@pytest.mark.slow  # an optimisation run to convergence, like training
def test_map_concentrates_on_the_only_region_the_model_looks_at():
    clip = region_clip()
    model = RegionModel(clip)
    saliency = STEP(model, MethodParams(areas="0.05,0.1", iterations=100)).attribute(clip, target=0)
    inside = inside_box()
    in_box = float(saliency[inside].sum() / saliency.sum())
    random = get_method("random")(model, MethodParams()).attribute(clip, target=0)
    assert in_box > 0.3 > 4 * float(random[inside].sum() / random.sum()), f"{in_box:.3f} of the mass in the box"
    near_box = torch.nn.functional.max_pool3d(inside[None].float(), (1, 7, 7), 1, (0, 3, 3))[0].bool()
    assert near_box.flatten()[saliency.argmax()]  # masks reach past the box by their soft edge (sigma = 3 px)
    assert model.scale.requires_grad and model.scale.grad is None  # no gradient reached the model's parameters


@pytest.mark.slow  # an optimisation run to convergence, like training
def test_area_constraint_holds_at_convergence():
    """The share of voxels above 0.5 lands on the target area (both above the box's 7.3%, so the reward asks for no
    more): within 10% by the area term alone; 60-110% of it with the smoothness term, whose cores pull every
    ellipsoid position beyond their quota to 0 and so erode blob rims (on the probe: 73-94% of each area)."""
    clip = region_clip()
    for area in (0.1, 0.3):
        alone = STEP(RegionModel(clip), MethodParams(areas=str(area), iterations=100, smoothness=0)).attribute(clip, 0)
        kept = float((alone > 0.5).float().mean())
        assert abs(kept - area) <= 0.1 * area, f"area {area}, no smoothness term: {kept:.3f} of the voxels above 0.5"
        mask = STEP(RegionModel(clip), MethodParams(areas=str(area), iterations=100)).attribute(clip, 0)
        kept = float((mask > 0.5).float().mean())
        assert 0.6 * area <= kept <= 1.1 * area, f"area {area}: {kept:.3f} of the voxels above 0.5"
        assert mask.min() >= 0 and mask.max() <= 1


@pytest.mark.slow  # eight maps of the probe at the defaults, STEP's four at about 12 s each
def test_explain_step_on_synthetic_clips_points_at_the_target_far_more_often_than_random(tmp_path):
    """The issue's bar through the command line: S-PT of `aosa explain --method step` beats a random map's by 0.3."""
    rows = list(iter_manifest(write_benchmark(tmp_path / "clips", videos=4, seed=11)))  # 112 px: boxes as given
    rates = {"step": [], "random": []}
    for row in rows:
        for method in rates:
            out = tmp_path / f"{row.video_id}-{method}"
            assert explain_cli([str(row.path), "--model", "probe", "--method", method, "--out", str(out)]) == 0
            rates[method].append(pointing_game(np.load(out / "saliency.npy"), row.boxes).rate)
    step, random = float(np.mean(rates["step"])), float(np.mean(rates["random"]))
    assert step >= random + 0.3, f"S-PT step {step:.3f}, random {random:.3f}"


def test_same_seed_same_map_and_the_global_rng_is_left_alone():
    clip = region_clip()

    def explain(seed: int) -> torch.Tensor:
        return STEP(RegionModel(clip), MethodParams(areas="0.1", iterations=20, seed=seed)).attribute(clip, 0)

    state = torch.get_rng_state()
    first = explain(0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, explain(0)) and not torch.equal(first, explain(1))  # seeds break ranking ties


def test_progress_is_reported_every_step():
    calls = []
    method = STEP(RegionModel(region_clip()), MethodParams(iterations=4))
    method.progress = lambda step, total: calls.append((step, total))
    method.attribute(region_clip(), target=0)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_area_term_equals_sorting_against_a_step():
    values = torch.rand(3, 500, generator=torch.Generator().manual_seed(2))
    ones = [1, 50, 499]
    reference = torch.stack([(torch.arange(500) >= 500 - k).float() for k in ones])
    expected = ((values.sort(dim=1).values - reference) ** 2).mean(dim=1)
    torch.testing.assert_close(step_mismatch(values, ones, torch.zeros(500)), expected)


def test_smooth_mask_is_a_bump_around_its_parameter():
    generator = SmoothMask(32, 32, torch.device("cpu"))
    assert generator.grid == (16, 16)  # one parameter every 2 px: STEP's 7 px at 112 px
    params = torch.zeros(1, 16, 16)
    params[0, 5, 10] = 1
    mask = generator(params)[0]
    assert 0 <= mask.min() and mask.max() <= 1
    assert mask[10:12, 20:22].min() > 0.99 and mask[:, :14].max() == 0  # flat top on cell (5, 10), nothing far away
    torch.testing.assert_close(mask[10:12, 12:30], mask[10:12, 12:30].flip(1))  # symmetric about the cell


def test_smoothness_core_is_an_ellipsoid():
    core = ellipsoid(8, 11, torch.device("cpu"))[0, 0]
    assert core.shape == (8, 11, 11) and core[3:5, 5, 5].all() and not core[0, 0, 0]
    assert 0.5 < float(core.mean()) < 0.56  # about pi / 6 of its box, as STEP counts it
    torch.testing.assert_close(core, core.flip(0).flip(1).flip(2))


def test_step_options_parse_and_validate():
    params = MethodParams().with_overrides(
        {"areas": "0.05/0.2", "iterations": "7", "learning_rate": "0.1", "smoothness": "0"})
    assert (params.area_values, params.iterations, params.learning_rate, params.smoothness) == ((0.05, 0.2), 7, 0.1, 0)
    assert MethodParams().area_values == (0.05, 0.1, 0.15, 0.5)
    bad = [({"areas": ""}, "areas must be numbers"), ({"areas": "0.1,x"}, "areas must be numbers"),
           ({"areas": "0.1,1"}, "strictly between 0 and 1"), ({"areas": "0,0.1"}, "strictly between 0 and 1"),
           ({"areas": ",".join(["0.1"] * 9)}, "at most 8"), ({"iterations": "0"}, "iterations must be at least 1"),
           ({"learning_rate": "0"}, "learning_rate must be"), ({"learning_rate": "nan"}, "learning_rate must be"),
           ({"smoothness": "-1"}, "smoothness must be"), ({"smoothness": "inf"}, "smoothness must be"),
           ({"learning_rate": "fast"}, "learning_rate must be a number")]
    for overrides, message in bad:
        with pytest.raises(ParamsError, match=message):
            MethodParams().with_overrides(overrides)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_map_agrees_with_the_cpu_map_on_the_evidence(fp32_cuda):
    """Where the model looks, both devices' masks agree. Elsewhere the model's gradient is zero and Adam scales
    rounding noise up to whole steps, so which of the don't-care voxels fill the area is arbitrary per device
    (an H200 run differed there by up to 0.87 of a mask's range; a CPU run repeats itself exactly)."""
    clip, inside = region_clip(), inside_box()
    params = MethodParams(areas="0.1", iterations=30)
    cpu = STEP(RegionModel(clip), params).attribute(clip, 0)
    cuda = STEP(RegionModel(clip).cuda(), params).attribute(clip.cuda(), 0)
    assert cuda.device.type == "cuda"
    cuda = cuda.cpu()
    assert abs(float(cuda[inside].mean() - cpu[inside].mean())) < 0.05
    share = [float(saliency[inside].sum() / saliency.sum()) for saliency in (cpu, cuda)]
    assert abs(share[0] - share[1]) < 0.05, f"mass in the box: cpu {share[0]:.3f}, cuda {share[1]:.3f}"
