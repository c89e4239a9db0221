"""The two stateful stages of an evaluation, as plain classes: preparing videos and running a model.

`engine.runtime.actors` turns each into a Ray actor; tests and single-process runs can use them directly.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import ray
import torch

from aosa.engine.errors import AosaError
from aosa.engine.io.flow import compute_flow
from aosa.engine.io.preprocess import Clip, load_clip, model_boxes
from aosa.engine.models.backends import describe_device, use_backend
from aosa.engine.models.counting import CountingModel
from aosa.engine.models.loading import LoadedModel, load_model
from aosa.engine.models.timing import ReferenceSampler
from aosa.engine.runtime.whole import load_whole
from aosa.engine.store.previews import Preview, encode_preview
from aosa.kernels.incremental import BufferPool, IncrementalModel, PlanGraphs, incremental_for
from aosa.kernels.methods import get_method
from aosa.kernels.metrics import curve_points
from aosa.kernels.occlusion import Inference, checked_scores
from aosa.kernels.scoring import ScoreFunction
from aosa.kernels.space import InputSpace
from aosa.kernels.tubes import TubeSet
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams
from aosa.schemas.preprocessing import Preprocessing

TORCHSCRIPT_PREAMBLE = "The following operation failed in the TorchScript interpreter"


@dataclass(frozen=True)
class Failure:
    """Why one video or unit could not be evaluated: a stable `kind` and a one-line message."""

    kind: str
    message: str

    @classmethod
    def of(cls, exc: BaseException, path: object) -> Failure:
        """The failure from whatever raised (the user's exception inside a Ray task error too), in one line naming
        the file at `path`. A TorchScript model's error says what went wrong in its last line, not its first."""
        cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        kind = getattr(cause, "kind", None) or type(cause).__name__
        message = lines[0] if lines else type(cause).__name__
        if lines and lines[0].startswith(TORCHSCRIPT_PREAMBLE):
            name, _, said = lines[-1].partition(": ")
            kind, message = (name.rpartition(".")[2], said) if said else (kind, lines[-1])
        return cls(kind, message if str(path) in message else f"{path}: {message}")


class Stage(NamedTuple):
    """One stage's share of a unit: its seconds and what it processed in them (throughput = items / seconds)."""

    seconds: float
    items: int
    unit: str


@dataclass
class PreparedVideo:
    """A decoded clip at model resolution with its flows (one per flow method asked for), model-pixel boxes,
    the decoder that read it (for the metrics row's `decoder` column) and its preview (engine.store.previews)."""

    row: ManifestRow
    clip: Clip | None  # None once split off to travel by reference (`VideoPreparer.prepare_by_reference`)
    shape: tuple[int, int, int, int]  # (C, T, H, W) of the model-input clip
    flows: dict[str, torch.Tensor]
    boxes: list[tuple[int, int, int, int, int]]
    timings: dict[str, float] = field(default_factory=dict)
    decoder: str = "unknown"
    preview: bytes | None = None

    def stages(self) -> dict[str, Stage]:
        """Decode (frames) and each flow (frame pairs) as stages, for the timings table."""
        frames = self.shape[1]
        return {name: Stage(seconds, frames, "frames") if name == "decode"
                else Stage(seconds, frames - 1, "frame pairs") for name, seconds in self.timings.items()}


class VideoPreparer:
    """Decode + flow stage: turns a manifest row into model input (DALI decodes on `device` when it can)."""

    def __init__(self, preprocessing: Preprocessing, decoder: str = "auto", start: int = 0, device: str = "cpu") -> None:
        self.preprocessing, self.decoder, self.start, self.device = preprocessing, decoder, start, device

    def prepare(self, row: ManifestRow, flow_methods: tuple[str, ...], whole: bool = False) -> PreparedVideo | Failure:
        """Decode the clip (`whole`: every frame of the video from the start frame, engine.runtime.whole) and compute
        each flow; a bad video becomes a Failure, never an exception."""
        try:
            began = time.perf_counter()
            clip = (load_clip(row.path, self.preprocessing, start=self.start, backend=self.decoder, device=self.device)
                    if not whole else load_whole(row, self.preprocessing, self.start))
            boxes = model_boxes(row, clip.geometry, clip.tensor.shape[1])
            preview = encode_preview(Preview(clip.frames, tuple(boxes), clip.decoder))  # ~10 ms at 16x112x112
            timings = {"decode": time.perf_counter() - began}
            flows = {}
            for method in flow_methods:
                began = time.perf_counter()
                flows[method] = compute_flow(clip.frames, method)
                timings[f"flow:{method}"] = time.perf_counter() - began
            return PreparedVideo(row, clip, tuple(clip.tensor.shape), flows, boxes, timings, decoder=clip.decoder,
                                 preview=preview)
        except (AosaError, ValueError, OSError) as exc:
            return Failure.of(exc, row.path)

    def prepare_by_reference(self, row: ManifestRow, flow_methods: tuple[str, ...], whole: bool = False
                             ) -> tuple[PreparedVideo | Failure, torch.Tensor | None]:
        """`prepare`, split in two for a call with `num_returns=2`: the small description for the scheduler,
        and the clip tensor, which stays in the object store for the model actors (the caller owns both)."""
        prepared = self.prepare(row, flow_methods, whole)
        if isinstance(prepared, Failure):
            return prepared, None
        return dataclasses.replace(prepared, clip=None), prepared.clip.tensor


@dataclass(frozen=True)
class ModelResult:
    """What a model call returns: its value, the seconds spent in forward passes, the clips scored, and the
    seconds the whole call kept its worker busy (masks, fills and bookkeeping too; time queued excluded)."""

    value: Any
    seconds: float
    clips: int
    busy: float
    inference: Inference | None = None  # occlusion scores: incremental or dense, why, how far checked
    masks: Stage | None = None  # building the map's masks (tubes) and fill, for methods that build any


class IncrementalCache:
    """The IncrementalModel of the last clip a worker scored occlusions of: its clean pass runs once per clip
    and mode, however many shards and methods follow; its scratch memory stays warm from clip to clip."""

    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self.pool = BufferPool()
        self.graphs = PlanGraphs()  # on a GPU: each plan structure captured once, replayed for the clips after
        self._key: tuple[torch.Tensor, str] | None = None
        self._built: tuple[IncrementalModel | None, str | None] = (None, None)

    def get(self, clip: torch.Tensor, mode: str, logits: torch.Tensor) -> tuple[IncrementalModel | None, str | None]:
        """The IncrementalModel for `clip` under `mode` ("auto", "on", "off"), or None for dense forwards, and why
        dense (kernels.incremental.incremental_for); `logits` (1, classes): the clip's, as this model's backend
        scores it, which the traced module must reproduce."""
        if self._key is None or self._key[1] != mode or not torch.equal(self._key[0], clip):
            self._built = incremental_for(self.model, clip, mode, logits, self.pool, self.graphs)
            self._key = (clip, mode)
        return self._built


class ModelWorker:
    """Holds one model on one device; every forward pass of an evaluation runs here."""

    def __init__(self, spec: str, device: str = "auto", backend: str = "eager", batch_size: int = 16,
                 engine_cache: str = "~/.cache/aosa/engines") -> None:
        self.model = load_model(spec, device)
        self.backend = use_backend(self.model, backend, batch_size, Path(engine_cache).expanduser())
        self.reference = ReferenceSampler(self.model)
        self.incremental = IncrementalCache(self.model)
        prep = self.model.preprocessing
        self.space = InputSpace(mean=prep.mean, std=prep.std)

    def describe(self) -> dict[str, Any]:
        """Preprocessing, class count and device, for the scheduler."""
        return {"preprocessing": self.model.preprocessing, "num_classes": self.model.num_classes,
                "device": describe_device(self.model.device), "backend": self.backend}

    def placement(self) -> str:
        """Where this worker's passes run: its node and GPUs (workers sharing a GPU share the place), or, on a CPU,
        a place of its own (its own cores)."""
        context = ray.get_runtime_context()
        if self.model.device.type == "cuda":
            return f"{context.get_node_id()}/gpu:{','.join(map(str, ray.get_gpu_ids()))}"
        return f"{context.get_node_id()}/actor:{context.get_actor_id()}"

    def _run(self, work) -> ModelResult:
        began = time.perf_counter()
        counted = CountingModel(self.model)
        value = work(counted)  # every work returns CPU tensors, so a GPU's queue has drained by now
        result = ModelResult(value, counted.seconds, counted.clips, time.perf_counter() - began)
        self.reference.maybe_sample()  # after the call: its busy seconds do not include the sample
        return result

    def reference_seconds(self, repeats: int) -> float:
        """Median seconds of a batch-1 forward of a fixed clip here, sampled while this worker scored maps."""
        return self.reference.median(repeats)

    def logits(self, clip: torch.Tensor) -> ModelResult:
        """Logits (classes,) of the clean clip, on the CPU."""
        with torch.no_grad():
            return self._run(lambda model: model(clip.unsqueeze(0).to(self.model.device))[0].float().cpu())

    def occlusion_scores(self, method: str, params: MethodParams, clip: torch.Tensor, target: int,
                         tubes: TubeSet, index: torch.Tensor, logits: torch.Tensor) -> ModelResult:
        """Target scores of the clip occluded by masks `index` (a shard), built on this worker's device, by
        incremental inference (one clean pass per clip, kept for the clip's other shards and methods, checked
        against `logits`, the clip's (classes,) from `logits()`, and on the shard's checked masks) or dense."""
        inference, fills = [], []

        def work(model: CountingModel) -> torch.Tensor:
            inputs = clip.to(self.model.device)
            explainer = get_method(method)(model, params, self.space)
            began = time.perf_counter()
            fill = explainer.make_fill(inputs)
            fills.append(Stage(time.perf_counter() - began, 0, "masks"))  # the driver adds the tubes' share
            fast, note = self.incremental.get(inputs, params.incremental, logits[None])
            scores, how = checked_scores(explainer.scorer(target), inputs, tubes, fill, index, params.batch_size,
                                         fast, note)
            model.add(how.clips, how.seconds)  # occluded clips scored without a call of the model: counted here
            inference.append(how)
            return scores.cpu()
        return dataclasses.replace(self._run(work), inference=inference[0], masks=fills[0])

    def attribute(self, method: str, params: MethodParams, clip: torch.Tensor, target: int,
                  flow: torch.Tensor | None) -> ModelResult:
        """A whole map from a method that is not sharded (gradient methods, AOSA-approx, STEP)."""
        explainers = []

        def work(model: CountingModel) -> torch.Tensor:
            explainers.append(get_method(method)(model, params, self.space))
            return explainers[0].attribute(clip.to(self.model.device), target, flow).cpu()
        result, explainer = self._run(work), explainers[0]
        built = explainer.mask_seconds is not None
        return dataclasses.replace(result, masks=Stage(explainer.mask_seconds, explainer.mask_count, "masks")
                                   if built else None)

    def curve_points(self, clip: torch.Tensor, saliency: torch.Tensor, target: int,
                     shard: list[tuple[str, list[int]]], batch_size: int) -> ModelResult:
        """Target probabilities at some points of the deletion and insertion curves (one shard of a map's 58)."""
        def work(model: CountingModel) -> list[torch.Tensor]:
            inputs = clip.to(self.model.device)
            score = ScoreFunction(model, target, "prob")
            return [curve_points(score, inputs, saliency.to(inputs.device), curve, torch.tensor(points),
                                 batch_size=batch_size) for curve, points in shard]
        return self._run(work)
