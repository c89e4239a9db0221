"""Dense optical flow between consecutive model-resolution frames (DESIGN.md section 4, **Flow**)."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import torch

from aosa.engine.errors import ConfigError
from aosa.schemas.method_params import FLOWS

# The paper's Farneback parameters, shared by the CPU and CUDA backends.
FARNEBACK = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3,
             "poly_n": 5, "poly_sigma": 1.2, "flags": 0}

PairFlow = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _cuda_unavailable_reason() -> str | None:
    """Why the CUDA Farneback backend cannot run here, or None when it can; detected, never assumed."""
    cuda = getattr(cv2, "cuda", None)
    if cuda is None or not hasattr(cuda, "getCudaEnabledDeviceCount"):
        return "the installed cv2 has no cuda module"
    try:
        devices = cuda.getCudaEnabledDeviceCount()
    except cv2.error as exc:
        return f"cv2.cuda.getCudaEnabledDeviceCount() failed: {str(exc).strip()}"
    if devices <= 0:
        return "the installed cv2 was built without CUDA or sees no CUDA device (PyPI wheels have no CUDA)"
    if not hasattr(cuda, "FarnebackOpticalFlow"):
        return "the installed cv2 has CUDA but no cv2.cuda.FarnebackOpticalFlow (cudaoptflow not built)"
    return None


def cuda_flow_available() -> bool:
    """True when cv2 has CUDA, a CUDA device and the CUDA Farneback class."""
    return _cuda_unavailable_reason() is None


def flow_backends() -> dict[str, str]:
    """Each flow method mapped to "available" or the reason it is not (for `aosa doctor`)."""
    cuda_reason = _cuda_unavailable_reason()
    return {"farneback": "available", "dis": "available",
            "farneback-cuda": cuda_reason or "available", "auto": "available"}


def resolve_method(method: str) -> str:
    """The concrete backend `method` runs on ("auto" picks CUDA Farneback when available); errors say why not."""
    if method not in FLOWS:
        raise ConfigError(f"unknown flow method {method!r}; choose one of {', '.join(FLOWS)}")
    if method == "auto":
        return "farneback-cuda" if cuda_flow_available() else "farneback"
    if method == "farneback-cuda" and (reason := _cuda_unavailable_reason()) is not None:
        raise ConfigError(f"flow 'farneback-cuda' is not available: {reason}")
    return method


def _farneback() -> PairFlow:
    return lambda prev, nxt: cv2.calcOpticalFlowFarneback(prev, nxt, None, **FARNEBACK)


def _dis() -> PairFlow:
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return lambda prev, nxt: dis.calc(prev, nxt, None)


def _farneback_cuda() -> PairFlow:
    farneback = cv2.cuda.FarnebackOpticalFlow.create(
        numLevels=FARNEBACK["levels"], pyrScale=FARNEBACK["pyr_scale"], fastPyramids=False,
        winSize=FARNEBACK["winsize"], numIters=FARNEBACK["iterations"], polyN=FARNEBACK["poly_n"],
        polySigma=FARNEBACK["poly_sigma"], flags=FARNEBACK["flags"])

    def upload(grey: np.ndarray) -> cv2.cuda.GpuMat:
        mat = cv2.cuda.GpuMat()
        mat.upload(grey)
        return mat

    return lambda prev, nxt: farneback.calc(upload(prev), upload(nxt), None).download()


_BACKENDS: dict[str, Callable[[], PairFlow]] = {
    "farneback": _farneback, "dis": _dis, "farneback-cuda": _farneback_cuda}


def compute_flow(frames: np.ndarray, method: str = "farneback") -> torch.Tensor:
    """Flow (T-1,H,W,2) float32 of uint8 RGB frames (T,H,W,3); [t, y, x] = (dx, dy) from frame t to t+1."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ConfigError(f"flow needs uint8 frames of shape (T,H,W,3), got {frames.dtype} {frames.shape}")
    if frames.shape[0] < 2:
        raise ConfigError(f"flow needs at least 2 frames, got {frames.shape[0]}")
    calc = _BACKENDS[resolve_method(method)]()
    grey = [cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY) for frame in frames]
    flows = [calc(prev, nxt) for prev, nxt in zip(grey, grey[1:])]
    return torch.from_numpy(np.stack(flows).astype(np.float32, copy=False))
