"""Execution backends of a model: eager torch in fp32 or with TF32 tensor cores, or a TensorRT engine built by
torch-tensorrt (GPUs only).

`eager` is fp32 on every device: on CUDA it turns TF32 off for convolutions and matrix products (PyTorch
leaves it on for cuDNN convolutions), so a GPU map equals the CPU map within fp32 rounding and incremental
occlusion stays exact. `eager-tf32` trades that for speed (an H200 ran r3d_18's forward passes 3.4x faster;
inputs are rounded to 10 mantissa bits, so scores drift by about 1e-3). The flags are process-wide, which is
where a model worker lives.

torch_tensorrt fails to import on a machine without a GPU driver, so it is imported only inside the GPU
path, after the checks below; a CPU machine never imports it. A compiled engine serves forward passes
only (occlusion and metric batches); gradient methods keep using the eager module.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from aosa.engine.errors import ConfigError
from aosa.schemas.preprocessing import Preprocessing

if TYPE_CHECKING:
    from aosa.engine.models.loading import LoadedModel

BACKENDS = ("auto", "eager", "eager-tf32", "tensorrt")
TOLERANCE = 1e-2  # largest allowed |softmax(compiled) - softmax(eager)| on the first-use check
log = logging.getLogger(__name__)


def tensorrt_unavailable(device: torch.device) -> str | None:
    """Why TensorRT cannot serve a model on `device` here, or None when it can."""
    if device.type != "cuda":
        return f"TensorRT needs a CUDA device; this model runs on {device}"
    if not torch.cuda.is_available():
        return "CUDA is not available (no GPU or driver)"
    if importlib.util.find_spec("torch_tensorrt") is None:
        return "torch-tensorrt is not installed (pip install -e '.[gpu]')"
    return None


def resolve_backend(backend: str, device: torch.device) -> str:
    """`auto` -> tensorrt when it can run here, else eager; an unavailable `tensorrt` is a one-line error."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    reason = tensorrt_unavailable(device)
    if backend == "auto":
        return "eager" if reason else "tensorrt"
    if backend == "eager-tf32" and device.type != "cuda":
        raise ConfigError(f"backend 'eager-tf32' needs a CUDA device; this model runs on {device}")
    if backend == "tensorrt" and reason:
        raise ConfigError(f"backend 'tensorrt' is not available: {reason}")
    return backend


class HalfPrecision(nn.Module):
    """Feeds a float16 engine from float32 clips and hands back float32 logits."""

    def __init__(self, engine: nn.Module) -> None:
        super().__init__()
        self.engine = engine

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return self.engine(batch.half()).float()


def engine_key(module: nn.Module, preprocessing: Preprocessing, batch_size: int) -> str:
    """Cache key of a compiled engine: the weights, the input shapes and the versions that built it."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    import torch_tensorrt  # GPU path only: the caller checked tensorrt_unavailable()

    shape = f"{preprocessing.frames}x{preprocessing.size}x{batch_size}"
    versions = f"{torch.__version__}-{torch_tensorrt.__version__}-{torch.cuda.get_device_name()}"
    digest.update(f"{shape}-{versions}".encode())
    return digest.hexdigest()[:24]


def compile_tensorrt(module: nn.Module, preprocessing: Preprocessing, batch_size: int, cache_dir: Path) -> nn.Module:
    """A float16 TensorRT engine of `module` with only the batch dimension dynamic (1..batch_size), cached on
    disk by `engine_key`, checked against eager scores on first use."""
    import torch_tensorrt  # GPU path only

    device = next(module.parameters()).device
    shape = (3, preprocessing.frames, *preprocessing.size)
    path = Path(cache_dir) / f"{engine_key(module, preprocessing, batch_size)}.ep"
    if path.exists():
        log.info("loading cached TensorRT engine %s", path)
        return HalfPrecision(torch_tensorrt.load(str(path)).module())  # registers the engine ops, then loads
    spec = torch_tensorrt.Input(min_shape=(1, *shape), opt_shape=(batch_size, *shape),
                                max_shape=(batch_size, *shape), dtype=torch.half)
    half = copy.deepcopy(module).half().eval()
    engine = torch_tensorrt.compile(half, ir="dynamo", inputs=[spec], enabled_precisions={torch.half})
    compiled = HalfPrecision(engine)
    check_tolerance(module, compiled, shape, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_tensorrt.save(engine, str(path), arg_inputs=[spec])  # an Input range keeps the batch dimension dynamic
    return compiled


@torch.no_grad()
def check_tolerance(eager: nn.Module, compiled: nn.Module, shape: tuple[int, ...], device: torch.device) -> None:
    """Refuse an engine whose class probabilities drift more than TOLERANCE from eager's on random clips."""
    batch = torch.randn(2, *shape, device=device)
    drift = (torch.softmax(compiled(batch), 1) - torch.softmax(eager(batch).float(), 1)).abs().max().item()
    if drift > TOLERANCE:
        raise ConfigError(f"the TensorRT engine's probabilities differ from eager by {drift:.3g} "
                          f"(> {TOLERANCE}); use --backend eager")
    log.info("TensorRT engine within tolerance: max probability drift %.3g", drift)


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for CUDA convolutions and matrix products, on or off (process-wide torch flags)."""
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled


def use_backend(model: LoadedModel, backend: str, batch_size: int, cache_dir: Path) -> str:
    """Give `model` its precision and, for tensorrt, a compiled forward path; returns the backend used."""
    chosen = resolve_backend(backend, model.device)
    if model.device.type == "cuda":
        set_tf32(chosen == "eager-tf32")
    if chosen == "tensorrt":
        model.compiled = compile_tensorrt(model.module, model.preprocessing, batch_size, cache_dir)
    return chosen
