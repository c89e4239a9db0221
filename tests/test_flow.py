"""Optical flow: known translations are recovered, static clips give no motion, CUDA is detected, not assumed."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from aosa.engine.errors import ConfigError
from aosa.engine.io import flow
from aosa.schemas.method_params import FLOWS

SIZE = 112
MARGIN = 16  # interior excluded from the median: border pixels see content entering the view


def translating_clip(dx: int, dy: int, frames: int = 4, seed: int = 0) -> np.ndarray:
    """uint8 RGB crops of a smoothed-noise canvas whose content moves by (dx, dy) pixels per frame."""
    pad = frames * max(abs(dx), abs(dy)) + 1
    noise = np.random.default_rng(seed).uniform(0, 255, (SIZE + 2 * pad, SIZE + 2 * pad)).astype(np.float32)
    canvas = cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 2.0), None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    crops = [canvas[pad - t * dy: pad - t * dy + SIZE, pad - t * dx: pad - t * dx + SIZE] for t in range(frames)]
    return np.repeat(np.stack(crops)[..., None], 3, axis=-1)


def interior_median(field: torch.Tensor) -> np.ndarray:
    return np.median(field[:, MARGIN:-MARGIN, MARGIN:-MARGIN].reshape(-1, 2).numpy(), axis=0)


@pytest.mark.parametrize("method", ["farneback", "dis"])
def test_known_translation_is_recovered(method: str) -> None:
    clip = translating_clip(3, -2)
    field = flow.compute_flow(clip, method)
    assert field.shape == (3, SIZE, SIZE, 2) and field.dtype == torch.float32
    np.testing.assert_allclose(interior_median(field), [3.0, -2.0], atol=0.25)


@pytest.mark.parametrize("method", ["farneback", "dis", "auto"])
def test_static_clip_has_no_motion(method: str) -> None:
    field = flow.compute_flow(translating_clip(0, 0, frames=3), method)
    assert field.shape == (2, SIZE, SIZE, 2)
    assert float(np.median(np.linalg.norm(field.numpy(), axis=-1))) < 0.05


def test_bad_inputs_raise_config_error() -> None:
    clip = translating_clip(1, 1, frames=2)
    with pytest.raises(ConfigError, match="unknown flow method"):
        flow.compute_flow(clip, "lucas-kanade")
    with pytest.raises(ConfigError, match="at least 2 frames"):
        flow.compute_flow(clip[:1])
    with pytest.raises(ConfigError, match="uint8"):
        flow.compute_flow(clip.astype(np.float32))


@pytest.mark.skipif(flow.cuda_flow_available(), reason="this cv2 has CUDA")
def test_cuda_flow_without_cuda_raises_one_line() -> None:
    with pytest.raises(ConfigError, match="farneback-cuda' is not available") as info:
        flow.compute_flow(translating_clip(1, 1, frames=2), "farneback-cuda")
    assert "\n" not in str(info.value)
    assert flow.resolve_method("auto") == "farneback"


@pytest.mark.skipif(not flow.cuda_flow_available(), reason="this cv2 has no CUDA")
def test_cuda_flow_matches_known_translation() -> None:
    np.testing.assert_allclose(interior_median(flow.compute_flow(translating_clip(3, -2), "farneback-cuda")),
                               [3.0, -2.0], atol=0.25)


def _device_count(result: int | Exception) -> Callable[[], int]:
    """A stand-in for cv2.cuda.getCudaEnabledDeviceCount that returns or raises `result`."""
    def count() -> int:
        if isinstance(result, Exception):
            raise result
        return result
    return count


@pytest.mark.parametrize(("fake_cuda", "available"), [
    (None, False),
    (SimpleNamespace(), False),
    (SimpleNamespace(getCudaEnabledDeviceCount=_device_count(0), FarnebackOpticalFlow=object), False),
    (SimpleNamespace(getCudaEnabledDeviceCount=_device_count(cv2.error("driver")), FarnebackOpticalFlow=object),
     False),
    (SimpleNamespace(getCudaEnabledDeviceCount=_device_count(1)), False),
    (SimpleNamespace(getCudaEnabledDeviceCount=_device_count(1), FarnebackOpticalFlow=object), True),
], ids=["no-cuda-module", "no-device-count", "zero-devices", "count-raises", "no-farneback", "available"])
def test_cuda_detection(monkeypatch: pytest.MonkeyPatch, fake_cuda: object, available: bool) -> None:
    if fake_cuda is None:
        monkeypatch.delattr(cv2, "cuda", raising=False)
    else:
        monkeypatch.setattr(cv2, "cuda", fake_cuda, raising=False)
    assert flow.cuda_flow_available() is available
    backends = flow.flow_backends()
    assert set(backends) == set(FLOWS)
    assert (backends["farneback-cuda"] == "available") is available
    assert flow.resolve_method("auto") == ("farneback-cuda" if available else "farneback")
