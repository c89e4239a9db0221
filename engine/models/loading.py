"""Resolve a model SPEC (DESIGN.md section 10) to a ready module plus its preprocessing.

SPEC forms: a zoo NAME, `NAME=WEIGHTS.pth` (a state dict, loaded with weights_only=True), a `.pt2`
file (torch.export program), a TorchScript `.pt`/`.ts` file, or a directory holding a Hugging Face TimeSformer
(engine.models.video.timesformer). A sidecar `<stem>.json` beside a file gives preprocessing; a directory carries its own.
Every failure is one ModelError line naming the spec or file.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
import re
import warnings
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.export.passes import move_to_device_pass

from aosa.engine.errors import ModelError, short_reason, shown_keys
from aosa.engine.models.precision import precision_context
from aosa.engine.models.video.timesformer import load_timesformer
from aosa.engine.models.zoo import ZOO
from aosa.schemas.preprocessing import Preprocessing, PreprocessingError

log = logging.getLogger(__name__)

FILE_FORMS = ("NAME=WEIGHTS.pth (a state dict), a torch.export file (.pt2), a TorchScript file (.pt, .ts) "
              "or a Hugging Face TimeSformer directory (save_pretrained)")
STATE_DICT_KEYS = ("state_dict", "model", "model_state")  # Hara / torchvision recipes / PySlowFast


@dataclass
class LoadedModel:
    """A model in eval mode on `device`, with the preprocessing its input needs; calling it gives logits."""

    module: nn.Module
    preprocessing: Preprocessing
    spec: str
    device: torch.device
    compiled: nn.Module | None = None  # a compiled engine (engine.models.backends) for passes that need no gradient
    precision: str = "fp32"  # fp32, tf32, bf16 or fp16: every pass runs in it (engine.models.backends)
    channels_last: bool = False  # a 3D CNN whose passes run faster on channels-last batches (the zoo says which)
    _num_classes: int | None = field(default=None, init=False, repr=False)

    def __call__(self, batch: Tensor) -> Tensor:
        """(B, C, T, H, W) float batch -> (B, num_classes) logits; gradients flow to the input, through the
        eager module (a compiled engine serves only passes run without gradients)."""
        batch = batch.to(self.device)
        run = self.compiled if self.compiled is not None and not torch.is_grad_enabled() else self.module
        with self.precision_context():
            return run(batch).float()

    @property
    def scoring_module(self) -> nn.Module | None:
        """The module that scores batches without gradients as it is (eager, fp32), which incremental occlusion may
        trace; None when a compiled engine or a reduced precision scores them."""
        return self.module if self.compiled is None and self.precision == "fp32" else None

    def precision_context(self) -> AbstractContextManager[None]:
        """Passes inside run in the model's precision (TF32 flags, autocast for bf16 and fp16)."""
        return precision_context(self.precision, self.device)

    @property
    def batch_format(self) -> torch.memory_format:
        """The layout to build batches in: channels-last for a zoo 3D CNN run eagerly (oneDNN's conv3d then needs no
        reorder: jobs.benchmark's probe passes ran 32% faster on a CPU, r3d_18's 13%; cuDNN's tensor-core
        convolutions read NDHWC, and use_backend lays the weights out so on a GPU); contiguous for compiled engines."""
        fast = self.channels_last and self.compiled is None
        return torch.channels_last_3d if fast else torch.contiguous_format

    @property
    def num_classes(self) -> int:
        """Length of the class list, or the width of a dry run's output when the model ships none."""
        if self.preprocessing.classes:
            return len(self.preprocessing.classes)
        if self._num_classes is None:
            shape = (1, 3, self.preprocessing.frames, *self.preprocessing.size)
            try:
                with torch.no_grad():
                    self._num_classes = self(torch.zeros(shape)).shape[-1]
            except Exception as exc:  # the model rejects the clip its preprocessing describes
                raise ModelError(f"{self.spec}: a dry run on a {list(shape)} batch failed ({short_reason(exc)}); "
                                 "check the sidecar's frames and size") from None
        return self._num_classes


def resolve_device(device: str | torch.device) -> torch.device:
    """"auto" -> cuda when available else cpu; a cuda device without CUDA is a ModelError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"device {device!r}: not a device name; use cpu, cuda, cuda:N or auto") from None
    if resolved.type == "cpu":
        return resolved
    if resolved.type != "cuda":
        raise ModelError(f"device {device!r}: unsupported; use cpu, cuda, cuda:N or auto")
    if not torch.cuda.is_available():
        raise ModelError(f"device {device!r}: CUDA is not available on this machine (no GPU or driver); "
                         "use cpu or auto")
    if (resolved.index or 0) >= torch.cuda.device_count():
        raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    return resolved


def load_model(spec: str, device: str | torch.device = "cpu") -> LoadedModel:
    """Resolve `spec` to a LoadedModel on `device`; every failure is a one-line ModelError."""
    target = resolve_device(device)
    name, sep, weights = spec.partition("=")
    entry = ZOO.get(name if sep else spec)
    if sep and name in ZOO:
        module = _load_weights(name, _model_file(weights))
        preprocessing = _matching_classes(_sidecar(weights, ZOO[name].preprocessing), module, name)
    elif Path(spec).suffix in FILE_LOADERS:
        path = _model_file(spec)
        module, preprocessing = FILE_LOADERS[path.suffix](path, target), _sidecar(spec, None)
    elif spec in ZOO:
        module, preprocessing = ZOO[spec].builder().eval(), ZOO[spec].preprocessing
    elif Path(spec).is_dir():
        module, preprocessing = load_timesformer(Path(spec))
    else:
        unknown = f"unknown model name {name!r}" if sep else "unknown model spec"
        raise ModelError(f"{spec}: {unknown}; known names: {', '.join(ZOO)}; or {FILE_FORMS}")
    return LoadedModel(module.to(target), preprocessing, spec, target,
                       channels_last=entry is not None and entry.channels_last)


def _model_file(spec_path: str) -> Path:
    """The model file named in a spec, which must exist and be non-empty."""
    path = Path(spec_path)
    if not path.is_file():
        raise ModelError(f"{path}: model file not found")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: model file is empty")
    return path


def _sidecar(spec_path: str, defaults: Preprocessing | None) -> Preprocessing:
    """Preprocessing from `<stem>.json` beside the file, over `defaults` (zoo) or the Preprocessing() defaults."""
    path = Path(spec_path).with_suffix(".json")
    if path.is_file():
        try:
            return Preprocessing.from_json(path, defaults=defaults)
        except (PreprocessingError, OSError) as exc:
            raise ModelError(f"bad sidecar: {exc}") from None
    if defaults is None:
        log.warning("%s: no sidecar %s; using default preprocessing %s", spec_path, path.name,
                    Preprocessing().to_dict())
        return Preprocessing()
    return defaults


def _matching_classes(preprocessing: Preprocessing, module: nn.Module, name: str) -> Preprocessing:
    """Keep the class names only when the loaded head has that many rows; a fine-tuned head's are unknown."""
    head = ZOO[name].head
    if not head or not preprocessing.classes:
        return preprocessing
    rows = module.state_dict()[head].shape[0]
    return preprocessing if rows == len(preprocessing.classes) else dataclasses.replace(preprocessing, classes=())


def _load_weights(name: str, path: Path) -> nn.Module:
    """Zoo model `name` with the state dict in `path` (weights_only), strictly matched."""
    loaded = _torch_load(path)
    state = _state_dict(loaded, path)
    module = _build_for(name, loaded, state, path)
    _check_fit(module.state_dict(), state, path, name)
    module.load_state_dict(state, strict=True)
    return module.eval()


def _build_for(name: str, loaded: Any, state: dict[str, Tensor], path: Path) -> nn.Module:
    """Zoo model `name` for a checkpoint: its "arch", if recorded, must be the entry's; an entry with a `head`
    takes its class count from that weight's rows (a 101-class fine-tuned checkpoint gives a 101-class model)."""
    entry = ZOO[name]
    arch = loaded.get("arch") if isinstance(loaded, dict) and entry.arch else None
    if arch is not None and arch != entry.arch:
        raise ModelError(f"{path}: checkpoint records arch {arch!r}; {name} loads {entry.arch!r} checkpoints")
    head = state.get(entry.head) if entry.head else None
    return entry.builder() if head is None or head.dim() == 0 else entry.builder(num_classes=head.shape[0])


def _torch_load(path: Path) -> Any:
    """torch.load with weights_only=True; a refused pickle says why."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if refused:
            raise ModelError(f"{path}: holds a pickled Python object ({refused.group(1)}); "
                             "a full pickle is refused for safety; save a state_dict") from None
        raise ModelError(f"{path}: not a torch.save state dict (unreadable pickle data)") from None
    except Exception as exc:  # torch raises many types for foreign bytes; none may escape raw
        raise ModelError(f"{path}: not a torch.save state dict ({short_reason(exc)})") from None


def _state_dict(loaded: Any, path: Path) -> dict[str, Tensor]:
    """The tensors of a plain state dict or of one under "state_dict"/"model", without "module." prefixes."""
    if isinstance(loaded, dict):
        loaded = next((loaded[k] for k in STATE_DICT_KEYS if isinstance(loaded.get(k), dict)), loaded)
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ModelError(f"{path}: holds no state dict (expected name -> tensor, optionally under "
                         f"{' or '.join(map(repr, STATE_DICT_KEYS))})")
    return {k.removeprefix("module."): v for k, v in loaded.items()}


def _check_fit(expected: dict[str, Tensor], state: dict[str, Tensor], path: Path, name: str) -> None:
    """Raise one ModelError line listing the first missing, unexpected and mis-shaped keys."""
    problems = {
        "missing": [k for k in expected if k not in state],
        "unexpected": [k for k in state if k not in expected],
        "wrong shape": [f"{k} {list(state[k].shape)} vs {list(v.shape)}"
                        for k, v in expected.items() if k in state and state[k].shape != v.shape],
    }
    found = [f"{what} {shown_keys(keys)}" for what, keys in problems.items() if keys]
    if found:
        raise ModelError(f"{path}: state dict does not fit {name}: {'; '.join(found)}")




@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    """Hold back a torch logger's warnings (torch.export logs a full traceback before raising)."""
    handle = logging.getLogger(logger)
    level = handle.level
    handle.setLevel(logging.ERROR)
    try:
        yield
    finally:
        handle.setLevel(level)


def _load_exported(path: Path, device: torch.device) -> nn.Module:
    """A torch.export program's module, moved to `device` (exported modules cannot switch to eval())."""
    try:
        with _quiet("torch.export"):
            program = torch.export.load(path)
        return move_to_device_pass(program, device).module()
    except Exception as exc:  # foreign bytes raise zip, runtime and deserialization errors alike
        raise ModelError(f"{path}: not a torch.export program ({short_reason(exc)})") from None


def _load_torchscript(path: Path, device: torch.device) -> nn.Module:
    """A TorchScript module on `device`, in eval mode."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.load` is deprecated", category=FutureWarning)
            return torch.jit.load(path, map_location=device).eval()
    except Exception as exc:  # torch.jit.load raises RuntimeError subclasses with multi-line messages
        raise ModelError(f"{path}: not a TorchScript file (torch.jit.save); a torch.save state dict goes in "
                         f"NAME=WEIGHTS.pth ({short_reason(exc)})") from None


FILE_LOADERS: dict[str, Callable[[Path, torch.device], nn.Module]] = {
    ".pt2": _load_exported, ".pt": _load_torchscript, ".ts": _load_torchscript,
}
