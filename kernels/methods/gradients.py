"""Gradient baselines through Captum: Grad-CAM 3D on a named layer, SmoothGrad and plain gradient saliency."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from captum.attr import LayerAttribution, LayerGradCam, NoiseTunnel, Saliency
from torch import nn

from aosa.kernels._utils import module_of
from aosa.kernels.methods.base import ExplanationMethod
from aosa.kernels.scoring import ScoreFunction


def find_layer(module: nn.Module, name: str | None) -> nn.Module:
    """The submodule at dotted path `name` ("layer4", "features.2"); None or "": the last torch.nn.Conv3d."""
    convs = [path for path, layer in module.named_modules() if isinstance(layer, nn.Conv3d)]
    if not name:
        if not convs:
            raise ValueError(f"{type(module).__name__} has no Conv3d layer; name the Grad-CAM layer (layer=...)")
        return module.get_submodule(convs[-1])
    try:
        return module.get_submodule(name)
    except AttributeError:
        known = f"; its last Conv3d layers: {', '.join(convs[-5:])}" if convs else ""
        raise ValueError(f"Grad-CAM layer {name!r} not found in {type(module).__name__}{known}") from None


@contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Run the block with the global RNG (CPU, and `device` when it is CUDA) seeded, restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class GradientMethod(ExplanationMethod):
    """A Captum attribution of the target score on a batch of one clip, reduced to (T, H, W) by the max over channels.

    The max (not the sum) over RGB is Simonyan et al.'s reduction of a saliency map; Grad-CAM has one channel.
    """

    def attribute(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None = None) -> torch.Tensor:
        with torch.enable_grad():
            attributions = self.attribute_batch(inputs.detach().unsqueeze(0).requires_grad_(True), self.scorer(target))
        return attributions.detach()[0].amax(dim=0).float().to(inputs.device)

    @abstractmethod
    def attribute_batch(self, batch: torch.Tensor, score: ScoreFunction) -> torch.Tensor:
        """Attributions (1, C, T, H, W) of the (1, C, T, H, W) `batch` to `score`, its (B,) target scores."""


class GradCAM(GradientMethod):
    """Grad-CAM 3D: ReLU of the layer's channels weighted by their mean gradients, upsampled trilinearly."""

    name = "gradcam"

    def attribute_batch(self, batch: torch.Tensor, score: ScoreFunction) -> torch.Tensor:
        layer = find_layer(module_of(self.model), self.params.layer)
        cam = LayerGradCam(score, layer).attribute(batch, relu_attributions=True)
        return LayerAttribution.interpolate(cam.to(batch.device), tuple(batch.shape[2:]), interpolate_mode="trilinear")


class GradientSaliency(GradientMethod):
    """Plain gradient saliency: |d score / d input|."""

    name = "saliency"

    def attribute_batch(self, batch: torch.Tensor, score: ScoreFunction) -> torch.Tensor:
        return Saliency(score).attribute(batch, abs=True)


class SmoothGrad(GradientMethod):
    """Mean |gradient| over `smooth_samples` noisy copies, noise std = `noise` x the input's value range, seeded."""

    name = "smoothgrad"

    def attribute_batch(self, batch: torch.Tensor, score: ScoreFunction) -> torch.Tensor:
        p = self.params
        with seeded(p.seed, batch.device):
            return NoiseTunnel(Saliency(score)).attribute(
                batch, nt_type="smoothgrad", nt_samples=p.smooth_samples, nt_samples_batch_size=p.batch_size,
                stdevs=p.noise * self.space.value_range(), abs=True)
