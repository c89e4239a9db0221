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


def explain_clip(clip: Clip, model: LoadedModel, method: str, params: MethodParams,
                 target: int | None = None, progress: Progress | None = None) -> Explanation:
    """Explain an already decoded clip; flow is computed only for methods that need it. A method that reports
    progress (STEP's optimizer steps) calls `progress(done, total)`."""
    try:
        method_class = get_method(method)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    params = method_class.resolve(params)
    timings: dict[str, float] = {}
    inputs = clip.tensor.to(model.device)
    target, predicted, score = choose_target(model, inputs, target, params.score)
    flow, flow_name = None, None
    if method_class.needs_flow:
        start = time.perf_counter()
        flow_name = resolve_method(params.flow)
        flow = compute_flow(clip.frames, flow_name)
        timings["flow"] = time.perf_counter() - start
    counted = CountingModel(model)
    space = InputSpace(mean=model.preprocessing.mean, std=model.preprocessing.std)
    start = time.perf_counter()
    explainer = method_class(counted, params, space)
    explainer.progress = progress
    try:
        saliency = explainer.attribute(inputs, target, flow)
    except NotIncremental as exc:  # --incremental on with a model it cannot trace: one line naming the op
        raise ConfigError(f"--incremental on: {exc}") from None
    timings["method"] = time.perf_counter() - start
    timings["model_forward"] = counted.seconds
    if explainer.mask_seconds is not None:
        timings["masks"] = explainer.mask_seconds
    inference = explainer.inference if isinstance(explainer, OcclusionMethod) else None
    return Explanation(saliency=saliency.cpu().numpy().astype(np.float32), method=method, params=params,
                       target=target, predicted=predicted, score=score,
                       n_forward=counted.clips + (inference.clips if inference else 0), flow=flow_name,
                       timings=timings, inference=inference)


def explain_video(path: Path | str, model: LoadedModel, method: str, params: MethodParams,
                  target: int | None = None, start: int = 0, decoder: str = "auto",
                  progress: Progress | None = None) -> tuple[Clip, Explanation]:
    """Decode the clip of `path` the model expects and explain it."""
    began = time.perf_counter()
    clip = load_clip(path, model.preprocessing, start=start, backend=decoder, device=str(model.device))
    decode_seconds = time.perf_counter() - began
    explanation = explain_clip(clip, model, method, params, target, progress)
    explanation.timings = {"decode": decode_seconds, **explanation.timings,
                           "total": time.perf_counter() - began}
    return clip, explanation
