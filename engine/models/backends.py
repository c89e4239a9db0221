"""Execution backends of a model: how its passes run (eager torch, torch.compile's inductor, or a TensorRT engine)
and in which precision (fp32, TF32 tensor cores, bf16 or fp16 autocast).

A backend is named `RUNNER` or `RUNNER-PRECISION`: `eager` (fp32), `eager-tf32`, `eager-bf16`, `eager-fp16`,
`compile`, `compile-tf32`, ... and `tensorrt` (an fp16 engine). fp32 is exact and the default: on CUDA it turns
TF32 off for convolutions and matrix products (PyTorch leaves it on for cuDNN convolutions), so a GPU map equals
the CPU map within fp32 rounding and incremental occlusion stays exact. The reduced precisions trade that for
speed; what they do to maps is measured, per mode, in FIDELITY (`aosa precision`), never assumed. The TF32 flags
are process-wide, which is where a model worker lives.

`compile` runs torch.compile with the inductor, once for every batch size (CUDA graphs on a GPU, one recorded per
batch size), checked against eager on first use as a TensorRT engine is. torch_tensorrt fails
to import on a machine without a GPU driver, so it is imported only inside the GPU path, after the checks below;
a CPU machine never imports it. A compiled model serves forward passes only (occlusion and metric batches);
gradient methods keep using the eager module, in the backend's precision.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch._dynamo
from torch import nn

from aosa.engine.errors import ConfigError
from aosa.engine.models.precision import set_tf32
from aosa.schemas.preprocessing import Preprocessing

if TYPE_CHECKING:
    from aosa.engine.models.loading import LoadedModel

RUNNERS = ("eager", "compile", "tensorrt")
BACKENDS = ("auto", "eager", "eager-tf32", "eager-bf16", "eager-fp16",
            "compile", "compile-tf32", "compile-bf16", "compile-fp16", "tensorrt")
TOLERANCE = 1e-2  # largest allowed |softmax(compiled) - softmax(eager)| on the first-use check
# Maps of each reduced precision against fp32: the lower of the motion and appearance probes' mean Spearman
# correlations over 50 clips each (`aosa precision`, AOSA s=8), where and when it was measured (README, "Precision");
# a mode below FAITHFUL is labelled approximate in --help and doctor.
FIDELITY: dict[str, tuple[float, str]] = {"tf32": (0.9986, "H200, 2026-12-04"), "bf16": (0.9791, "H200, 2026-12-04"),
                                          "fp16": (0.9989, "H200, 2026-12-04")}
FAITHFUL = 0.99
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backend:
    """A backend name split into how passes run (`runner`) and in which `precision`."""

    runner: str
    precision: str

    @classmethod
    def parse(cls, name: str) -> Backend:
        """`eager-bf16` -> Backend("eager", "bf16"); a bare runner is fp32, `tensorrt` fp16."""
        if name not in BACKENDS or name == "auto":
            raise ConfigError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
        runner, _, precision = name.partition("-")
        return cls(runner, precision or ("fp16" if runner == "tensorrt" else "fp32"))

    @property
    def module_precision(self) -> str:
        """The precision the torch module's own passes run in (a TensorRT engine has its own; gradients stay fp32)."""
        return "fp32" if self.runner == "tensorrt" else self.precision


def fidelity_label(precision: str) -> str:
    """How far a precision's maps are from fp32's, as measured (FIDELITY), for --help and doctor."""
    if precision == "fp32":
        return "exact"
    if precision not in FIDELITY:
        return "fidelity not measured"
    correlation, where = FIDELITY[precision]
    quality = "faithful" if correlation >= FAITHFUL else "APPROXIMATE"
    return f"{quality}: maps rank-correlate {correlation:.4f} with fp32 ({where})"


def describe_device(device: torch.device) -> str:
    """`cuda:0 (GPU name)` or `cpu (N logical cores)`: which hardware ran, for runs rows, reports and benchmarks."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({os.cpu_count()} logical cores)"


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
    """`auto` -> tensorrt when it can run here, else eager; a backend this device cannot run is a one-line error."""
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    reason = tensorrt_unavailable(device)
    if backend == "auto":
        return "eager" if reason else "tensorrt"
    chosen = Backend.parse(backend)
    if chosen.precision == "tf32" and device.type != "cuda":
        raise ConfigError(f"backend {backend!r} needs a CUDA device (TF32 tensor cores); this model runs on {device}")
    if chosen.runner == "tensorrt" and reason:
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
def check_tolerance(eager: nn.Module, compiled: nn.Module, shape: tuple[int, ...], device: torch.device,
                    what: str = "TensorRT engine", batch: int = 2) -> None:
    """Refuse a compiled model whose class probabilities drift more than TOLERANCE from eager's on random clips."""
    clips = torch.randn(batch, *shape, device=device)
    drift = (torch.softmax(compiled(clips).float(), 1) - torch.softmax(eager(clips).float(), 1)).abs().max().item()
    if drift > TOLERANCE:
        raise ConfigError(f"the {what}'s probabilities differ from eager by {drift:.3g} (> {TOLERANCE}); "
                          "use --backend eager")
    log.info("%s within tolerance: max probability drift %.3g", what, drift)


class CompiledPasses(nn.Module):
    """A torch.compile'd module compiled once for every batch size: the batch dimension is marked dynamic (a single
    clip goes in twice, since torch.compile specializes size 1); on a GPU each batch size's CUDA graph is recorded
    once and replayed. Outputs are cloned, since a graph's next replay overwrites them."""

    def __init__(self, compiled: nn.Module) -> None:
        super().__init__()
        self.compiled = compiled

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        single = len(batch) == 1
        batch = batch.expand(2, *batch.shape[1:]).contiguous() if single else batch
        torch._dynamo.maybe_mark_dynamic(batch, 0)
        logits = self.compiled(batch)
        return (logits[:1] if single else logits).clone()


def compile_inductor(model: LoadedModel, batch_size: int) -> nn.Module:
    """torch.compile of the model's module (inductor, frozen weights; CUDA graphs on a GPU), checked against eager on
    first use."""
    # freezing: the weights are constants (these passes need no gradient), so eval batch norms fold into the
    # convolutions before them and weights are laid out once; CUDA graphs on a GPU ("reduce-overhead")
    options = {"freezing": True, "triton.cudagraphs": model.device.type == "cuda"}
    compiled = CompiledPasses(torch.compile(model.module, options=options, dynamic=False))
    shape = (3, model.preprocessing.frames, *model.preprocessing.size)
    with model.precision_context():
        check_tolerance(model.module, compiled, shape, model.device, "torch.compile'd model", max(1, batch_size))
    return compiled


def use_backend(model: LoadedModel, backend: str, batch_size: int, cache_dir: Path) -> str:
    """Give `model` its precision and, for compile and tensorrt, a compiled forward path; returns the backend."""
    chosen = resolve_backend(backend, model.device)
    parsed = Backend.parse(chosen)
    if model.device.type == "cuda":
        set_tf32(parsed.precision == "tf32")
        if model.batch_format == torch.channels_last_3d:  # weights in the batches' layout: no reorder per call
            model.module.to(memory_format=torch.channels_last_3d)
    model.precision = parsed.module_precision
    if parsed.runner == "tensorrt":
        model.compiled = compile_tensorrt(model.module, model.preprocessing, batch_size, cache_dir)
    elif parsed.runner == "compile":
        model.compiled = compile_inductor(model, batch_size)
    return chosen
