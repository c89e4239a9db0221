"""One video in, one saliency map out: decode, preprocess, flow, the chosen method, with timings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from aosa.engine.errors import ConfigError
from aosa.engine.io.flow import compute_flow, resolve_method
from aosa.engine.io.preprocess import Clip, load_clip
from aosa.engine.models.counting import CountingModel
from aosa.engine.models.loading import LoadedModel
from aosa.kernels.incremental import NotIncremental
from aosa.kernels.methods import get_method
from aosa.kernels.methods.occlusion_base import OcclusionMethod
from aosa.kernels.occlusion import Inference
from aosa.kernels.scoring import target_scores
from aosa.kernels.space import InputSpace
from aosa.schemas.method_params import MethodParams

Progress = Callable[[int, int], None]


@dataclass
class Explanation:
    """A saliency map (T, H, W) at model-input resolution, with what produced it and how long it took."""

    saliency: np.ndarray
    method: str
    params: MethodParams
    target: int
    predicted: int
    score: float
    n_forward: int  # clips scored for the map: model calls plus occluded clips scored incrementally
    flow: str | None
    timings: dict[str, float] = field(default_factory=dict)
    inference: Inference | None = None  # exact occlusion methods: incremental or dense, why, how far checked


def inference_fields(inference: Inference | None) -> dict[str, str | float | None]:
    """How an exact occlusion map was scored, as meta.json and the metrics row give it: `inference` (incremental or
    dense), `inference_note` (why dense where incremental was tried or asked for) and `incremental_max_diff` (the
    largest |incremental - dense| score over the masks scored both ways); nulls for other methods."""
    if inference is None:
        return {"inference": None, "inference_note": None, "incremental_max_diff": None}
    return {"inference": inference.path, "inference_note": inference.note, "incremental_max_diff": inference.max_diff}


def choose_target(model: LoadedModel, clip: torch.Tensor, target: int | None, score: str) -> tuple[int, int, float]:
    """(target, predicted class, target score of the clean clip); target defaults to the prediction."""
    with torch.no_grad():
        logits = model(clip.unsqueeze(0))
    classes = logits.shape[1]
    predicted = int(logits.argmax(dim=1))
    target = predicted if target is None else target
    if not 0 <= target < classes:
        raise ConfigError(f"target {target} is outside the model's classes 0..{classes - 1}")
    return target, predicted, float(target_scores(logits, target, score)[0])


class ClipExplainer:
    """One method on one model, run clip after clip: the explainer (and an occlusion method's scratch memory) is
    built once, and each map is timed and counted on its own."""

    def __init__(self, model: LoadedModel, method: str, params: MethodParams) -> None:
        try:
            self.method_class = get_method(method)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.params = self.method_class.resolve(params)
        self.counted = CountingModel(model)
        space = InputSpace(mean=model.preprocessing.mean, std=model.preprocessing.std)
        self.explainer = self.method_class(self.counted, self.params, space)

    def run(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None
            ) -> tuple[np.ndarray, dict[str, float], Inference | None, int]:
        """The (T, H, W) float32 map of `inputs` (on the model's device), its timings (method, model_forward,
        masks), how an exact occlusion map was scored, and the clips it sent through the model."""
        clips, seconds = self.counted.clips, self.counted.seconds
        start = time.perf_counter()
        try:
            saliency = self.explainer.attribute(inputs, target, flow)
        except NotIncremental as exc:  # --incremental on with a model it cannot trace: one line naming the op
            raise ConfigError(f"--incremental on: {exc}") from None
        timings = {"method": time.perf_counter() - start, "model_forward": self.counted.seconds - seconds}
        if self.explainer.mask_seconds is not None:
            timings["masks"] = self.explainer.mask_seconds
        inference = self.explainer.inference if isinstance(self.explainer, OcclusionMethod) else None
        n_forward = self.counted.clips - clips + (inference.clips if inference else 0)
        return saliency.cpu().numpy().astype(np.float32), timings, inference, n_forward


def explain_clip(clip: Clip, model: LoadedModel, method: str, params: MethodParams,
                 target: int | None = None, progress: Progress | None = None,
                 runner: ClipExplainer | None = None) -> Explanation:
    """Explain an already decoded clip; flow is computed only for methods that need it. A method that reports
    progress (STEP's optimizer steps) calls `progress(done, total)`. `runner` (of this method, model and params)
    keeps its explainer warm from clip to clip; by default each call builds its own."""
    runner = runner or ClipExplainer(model, method, params)
    runner.explainer.progress = progress
    inputs = clip.tensor.to(model.device)
    target, predicted, score = choose_target(model, inputs, target, runner.params.score)
    flow, flow_name, timings = None, None, {}
    if runner.method_class.needs_flow:
        start = time.perf_counter()
        flow_name = resolve_method(runner.params.flow)
        flow = compute_flow(clip.frames, flow_name)
        timings["flow"] = time.perf_counter() - start
    saliency, map_timings, inference, n_forward = runner.run(inputs, target, flow)
    return Explanation(saliency=saliency, method=method, params=runner.params, target=target, predicted=predicted,
                       score=score, n_forward=n_forward, flow=flow_name, timings=timings | map_timings,
                       inference=inference)


def explain_video(path: Path | str, model: LoadedModel, method: str, params: MethodParams,
                  target: int | None = None, start: int = 0, decoder: str = "auto",
                  progress: Progress | None = None, runner: ClipExplainer | None = None) -> tuple[Clip, Explanation]:
    """Decode the clip of `path` the model expects and explain it (`runner`: as explain_clip)."""
    began = time.perf_counter()
    clip = load_clip(path, model.preprocessing, start=start, backend=decoder, device=str(model.device))
    decode_seconds = time.perf_counter() - began
    explanation = explain_clip(clip, model, method, params, target, progress, runner)
    explanation.timings = {"decode": decode_seconds, **explanation.timings,
                           "total": time.perf_counter() - began}
    return clip, explanation
