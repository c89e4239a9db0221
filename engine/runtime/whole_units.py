"""One whole-video unit of an evaluation (`--clips all|every:HOP`): the video's windows explained on one model
actor (engine.runtime.whole_worker), then scored here: the first window's map as the clip metrics, the stitched
map and the evidence curve against the video's boxes and segment (engine.runtime.video_metrics)."""

from __future__ import annotations

import dataclasses
import time

import ray
import torch

from aosa.engine.errors import MapError
from aosa.engine.runtime.pool import ActorPool
from aosa.engine.runtime.recorder import FinishedUnit
from aosa.engine.runtime.video_metrics import VideoMetrics
from aosa.engine.runtime.whole_worker import WholeResult
from aosa.engine.runtime.workers import PreparedVideo, Stage
from aosa.kernels.methods import get_method
from aosa.kernels.metrics import pointing_game
from aosa.schemas.run_config import MethodSpec, RunConfig


def require_finite(saliency: torch.Tensor, prepared: PreparedVideo, spec: MethodSpec) -> None:
    """A map with NaN or infinite values is not scored: MapError naming the file and the method."""
    if not torch.isfinite(saliency).all():
        raise MapError(f"{prepared.row.path}: the {spec.key} map has {int((~torch.isfinite(saliency)).sum())}"
                       " non-finite values (NaN or infinite); it is not scored")


async def whole_unit(pool: ActorPool, config: RunConfig, prepared: PreparedVideo, clip_ref: ray.ObjectRef,
                     logits: torch.Tensor, spec: MethodSpec, first: bool, hop: int) -> FinishedUnit:
    """Explain every window of one video with one method for the video-level target (the label, else the class of
    the mean window logits `logits`) and score it."""
    began = time.perf_counter()
    method = get_method(spec.name)
    params = method.resolve(spec.params)
    row = prepared.row
    target = row.label if row.label is not None else int(logits.argmax())
    flow = prepared.flows.get(params.flow) if method.needs_flow else None
    with pool.model() as actor:
        result = await actor.explain_whole.remote(spec.name, params, clip_ref, target, flow, hop,
                                                  config.metric_batch_size)
    whole: WholeResult = result.value
    explanation = dataclasses.replace(whole.explanation, saliency=whole.explanation.saliency.copy())  # writable
    saliency = torch.from_numpy(explanation.saliency)
    require_finite(saliency, prepared, spec)
    boxes = prepared.boxes if row.boxes is not None else None
    video = VideoMetrics.of(config.clips, explanation, boxes, row.segment)
    finished = time.perf_counter()
    flow_seconds = prepared.timings.get(f"flow:{params.flow}", 0.0) if method.needs_flow else 0.0
    stages = {"explain": Stage(result.busy - whole.metric_seconds, 1, "maps"),
              "model_forward": Stage(result.seconds, result.clips, "clips"),
              "metrics": Stage(whole.metric_seconds, whole.metric_clips, "clips"),
              "total": Stage(flow_seconds + finished - began, 1, "maps")}
    if result.masks is not None:
        stages["masks"] = result.masks
    if first:  # decode and flow are shared by the video's units: stored once, with its first unit
        stages |= prepared.stages()
    pointing = None if boxes is None else pointing_game(explanation.first, boxes)
    return FinishedUnit(prepared, spec, params, logits, target, explanation.score,
                        dataclasses.replace(result, value=saliency), whole.faith, pointing, stages, flow_seconds, video)
