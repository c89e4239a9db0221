"""Grad-CAM, SmoothGrad, gradient saliency and the random map: known answers, hand computations, reproducibility."""

import argparse

import pytest
import torch
import torch.nn.functional as F
from captum.attr import NoiseTunnel
from torchvision.models.video import r3d_18

from aosa.engine.models.counting import CountingModel
from aosa.engine.models.loading import LoadedModel
from aosa.engine.models.video.probe3d import probe3d
from aosa.jobs.common import add_method_options, method_params
from aosa.kernels.methods import METHODS, get_method
from aosa.kernels.space import InputSpace
from aosa.schemas.method_params import MethodParams, ParamsError
from aosa.schemas.preprocessing import Preprocessing
from tests.seeding import seeded

BASELINES = ("gradcam", "smoothgrad", "saliency", "random")
BOX = (slice(2, 6), slice(4, 12), slice(8, 14))  # (t, y, x) of the region the box models look at


class Wrapper:
    """A plain callable around a module, like the engine's CountingModel: counts clips, records batch ranks."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module, self.clips, self.ranks = module, 0, set()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.clips += batch.shape[0]
        self.ranks.add(batch.dim())
        return self.module(batch)


def box_mask(shape: tuple[int, ...]) -> torch.Tensor:
    mask = torch.zeros(shape)
    mask[(slice(None), *BOX)] = 1
    return mask


class BoxModel(torch.nn.Module):
    """Logits (sum of tanh(x) * W, 0) with W non-zero only inside BOX: only the box matters."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("weight", box_mask(shape) * torch.linspace(0.5, 1.5, shape[-1]))

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        score = (torch.tanh(batch) * self.weight).flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


class BoxConvModel(torch.nn.Module):
    """Box-masked input -> identity-like strided Conv3d -> mean -> logits (sum, -sum): Grad-CAM's answer is BOX."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("mask", box_mask(shape))
        self.conv = torch.nn.Conv3d(3, 3, kernel_size=2, stride=2, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[:, :, 0, 0, 0] = torch.eye(3)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        score = self.conv(batch * self.mask).mean(dim=(1, 2, 3, 4))
        return torch.stack([score, -score], dim=1)


def noise(*shape: int, seed: int = 0) -> torch.Tensor:
    """A seeded standard-normal clip, drawn without touching the global RNG."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def tiny_convnet() -> torch.nn.Module:
    with seeded(3):
        return torch.nn.Sequential(
            torch.nn.Conv3d(3, 4, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, 5, 3, padding=1),
            torch.nn.ReLU(), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten(), torch.nn.Linear(5, 3)).eval()


def in_box_fraction(saliency: torch.Tensor) -> float:
    return float(saliency[BOX].sum() / saliency.sum())


def test_registry_lists_every_baseline_and_none_needs_flow():
    for name in BASELINES:
        assert name in METHODS and get_method(name).name == name and not get_method(name).needs_flow


@pytest.mark.parametrize("model_name, shape", [("probe3d", (3, 16, 112, 112)), ("r3d_18", (3, 8, 64, 64))])
def test_baselines_run_through_a_wrapper_on_real_models(model_name, shape):
    with seeded(0):
        module = (probe3d() if model_name == "probe3d" else r3d_18(weights=None)).eval()
    clip = noise(*shape)
    params = MethodParams(smooth_samples=4, batch_size=4)
    for name in BASELINES:
        model = Wrapper(module)
        saliency = get_method(name)(model, params).attribute(clip, target=1)
        assert saliency.shape == shape[1:] and saliency.dtype == torch.float32, name
        assert torch.isfinite(saliency).all() and saliency.std() > 0, name
        assert model.clips == {"random": 0, "smoothgrad": 4}.get(name, 1), name
        assert model.ranks <= {5}, name


def test_gradcam_runs_through_the_engines_counting_model_on_a_named_layer():
    loaded = LoadedModel(module=probe3d().eval(), preprocessing=Preprocessing(), spec="probe3d",
                         device=torch.device("cpu"))
    counted = CountingModel(loaded)
    saliency = get_method("gradcam")(counted, MethodParams(layer="features.2")).attribute(
        noise(3, 16, 112, 112), target=0)
    assert saliency.shape == (16, 112, 112) and counted.clips == 1 and saliency.std() > 0


@pytest.mark.parametrize("name", ["saliency", "smoothgrad"])
def test_gradient_maps_put_their_mass_in_the_only_region_the_model_sees(name):
    shape = (3, 8, 16, 16)
    # the logit, not the probability: the box sum can reach ~17, where float32 softmax saturates to a zero gradient
    params = MethodParams(smooth_samples=8, score="logit")
    saliency = get_method(name)(Wrapper(BoxModel(shape)), params).attribute(noise(*shape), target=0)
    assert saliency.sum() > 0 and in_box_fraction(saliency) > 0.999


def test_gradcam_of_an_identity_like_last_conv_peaks_in_the_box():
    shape = (3, 8, 16, 16)
    clip = torch.rand(shape) + 0.1
    saliency = get_method("gradcam")(Wrapper(BoxConvModel(shape)), MethodParams()).attribute(clip, target=0)
    peak = divmod(int(saliency.argmax()), 16 * 16)
    t, (y, x) = peak[0], divmod(peak[1], 16)
    assert all(part.start <= value < part.stop for part, value in zip(BOX, (t, y, x)))
    assert in_box_fraction(saliency) > 0.7  # the rest is the half-cell blur of upsampling from stride 2
    dilated = tuple(slice(part.start - 1, part.stop + 1) for part in BOX)
    assert float(saliency[dilated].sum() / saliency.sum()) > 0.9999


@pytest.mark.parametrize("score", ["prob", "logit"])
def test_gradcam_equals_a_hand_computation(score):
    model, clip, target = tiny_convnet(), noise(3, 8, 16, 16), 2
    activations = []
    handle = model[2].register_forward_hook(lambda module, args, output: activations.append(output))
    logits = model(clip.unsqueeze(0))
    handle.remove()
    value = torch.softmax(logits, dim=1)[0, target] if score == "prob" else logits[0, target]
    (gradient,) = torch.autograd.grad(value, activations[0])
    weights = gradient.mean(dim=(2, 3, 4), keepdim=True)
    cam = torch.relu((weights * activations[0]).sum(dim=1, keepdim=True))
    expected = F.interpolate(cam, size=(8, 16, 16), mode="trilinear", align_corners=False)[0, 0].detach()
    assert expected.max() > 0
    for layer in ("2", None):  # named, and the default: the last Conv3d
        saliency = get_method("gradcam")(Wrapper(model), MethodParams(score=score, layer=layer)).attribute(clip, target)
        torch.testing.assert_close(saliency, expected)


def test_gradcam_layer_errors_are_clear():
    clip = noise(3, 4, 8, 8)
    with pytest.raises(ValueError, match="Grad-CAM layer 'layer9' not found.*Conv3d layers: 0, 2"):
        get_method("gradcam")(tiny_convnet(), MethodParams(layer="layer9")).attribute(clip, 0)
    with pytest.raises(ValueError, match="has no Conv3d layer"):
        get_method("gradcam")(BoxModel(clip.shape), MethodParams()).attribute(clip, 0)
    with pytest.raises(ValueError, match="neither a torch.nn.Module nor a wrapper"):
        get_method("gradcam")(lambda batch: batch.flatten(1), MethodParams()).attribute(clip, 0)


def test_smoothgrad_noise_is_absolute_and_scaled_to_the_input_range(monkeypatch):
    calls = []
    original = NoiseTunnel.attribute

    def spy(self, inputs, **kwargs):
        calls.append(kwargs)
        return original(self, inputs, **kwargs)

    monkeypatch.setattr(NoiseTunnel, "attribute", spy)
    space = InputSpace(mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 0.5))
    params = MethodParams(noise=0.2, smooth_samples=6)
    get_method("smoothgrad")(tiny_convnet(), params, space).attribute(noise(3, 4, 8, 8), target=1)
    assert calls[0]["stdevs"] == pytest.approx(0.2 * 4.0) and calls[0]["nt_samples"] == 6


def test_smoothgrad_of_a_rescaled_input_space_is_the_same_map_rescaled():
    """f(x) = g(x / 10) on inputs x 10 with std / 10: the noise scales too, so the map is g's map / 10."""
    model, clip = tiny_convnet(), noise(3, 4, 8, 8)
    space = InputSpace(std=(0.5, 0.5, 0.5))
    scaled_space = InputSpace(std=(0.05, 0.05, 0.05))
    scaled_model = lambda batch: model(batch / 10)  # noqa: E731
    params = MethodParams(noise=0.3, smooth_samples=8, score="logit")
    reference = get_method("smoothgrad")(model, params, space).attribute(clip, target=0)
    scaled = get_method("smoothgrad")(scaled_model, params, scaled_space).attribute(clip * 10, target=0)
    torch.testing.assert_close(scaled, reference / 10, rtol=1e-4, atol=1e-7)


def test_smoothgrad_is_reproducible_per_seed_and_leaves_the_global_rng_alone():
    model, clip = tiny_convnet(), noise(3, 4, 8, 8)

    def smooth(seed: int) -> torch.Tensor:
        return get_method("smoothgrad")(model, MethodParams(seed=seed, smooth_samples=4)).attribute(clip, target=1)

    state = torch.get_rng_state()
    first = smooth(0)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, smooth(0)) and not torch.equal(first, smooth(1))


def test_random_map_is_seeded_uniform_and_calls_no_model():
    def no_model(batch):
        raise AssertionError("the random map must not call the model")

    clip = noise(3, 16, 112, 112)

    def random(seed: int) -> torch.Tensor:
        return get_method("random")(no_model, MethodParams(seed=seed)).attribute(clip, target=0)

    first = random(7)
    assert first.shape == (16, 112, 112) and first.dtype == torch.float32
    assert torch.equal(first, random(7)) and not torch.equal(first, random(8))
    assert 0 <= first.min() and first.max() < 1
    assert abs(first.mean() - 0.5) < 0.005 and abs(first.std() - 12 ** -0.5) < 0.005
    assert torch.histc(first, bins=10, min=0, max=1).div(first.numel()).sub(0.1).abs().max() < 0.005


def test_baseline_options_parse_and_validate():
    params = MethodParams().with_overrides({"layer": "layer4", "noise": "0.3", "smooth_samples": "8"})
    assert (params.layer, params.noise, params.smooth_samples) == ("layer4", 0.3, 8)
    for bad in ({"noise": "much"}, {"noise": "-0.1"}, {"noise": "nan"}, {"smooth_samples": "0"}):
        with pytest.raises(ParamsError):
            MethodParams().with_overrides(bad)
    parser = argparse.ArgumentParser()
    add_method_options(parser)
    parsed = method_params(parser.parse_args(["--layer", "features.2", "--noise", "0.05", "--smooth-samples", "32"]))
    assert (parsed.layer, parsed.noise, parsed.smooth_samples) == ("features.2", 0.05, 32)
    assert method_params(parser.parse_args([])) == MethodParams()
