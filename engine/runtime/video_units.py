"""One video's units in an evaluation: prepare the clip (by reference), run each pending method with its
masks and its curve points sharded across the model actors, score the map, record the unit. Whatever one
video raises ends as its error rows; Ray losing an actor, node or object mid-call is retried first."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import ray
import torch

from aosa.engine.runtime.pool import ActorPool
from aosa.engine.runtime.recorder import FinishedUnit, UnitRecorder
from aosa.engine.runtime.whole_units import require_finite, whole_unit
from aosa.engine.runtime.workers import Failure, ModelResult, PreparedVideo, Stage
from aosa.kernels.methods import get_method
from aosa.kernels.methods.occlusion_base import OcclusionMethod
from aosa.kernels.metrics import CURVES, STEPS, Faithfulness, pointing_game
from aosa.kernels.occlusion import Inference, aggregate
from aosa.kernels.scoring import target_scores
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams
from aosa.schemas.run_config import MethodSpec, RunConfig

# Ray losing an actor, a node or an object mid-call: the call may not have run, and running it again is safe.
TRANSIENT = (ray.exceptions.ActorUnavailableError, ray.exceptions.RayActorError, ray.exceptions.ObjectLostError,
             ray.exceptions.NodeDiedError, ray.exceptions.WorkerCrashedError)
TRANSIENT_RETRIES = 5


class VideoUnits:
    """Runs the pending units of one video at a time on the pool; returns each unit's stored status."""

    def __init__(self, config: RunConfig, pool: ActorPool, recorder: UnitRecorder, num_classes: int,
                 flow_methods: tuple[str, ...], hop: int | None = None) -> None:
        self.config, self.pool, self.recorder = config, pool, recorder
        self.num_classes, self.flow_methods = num_classes, flow_methods
        self.hop = hop  # None: a unit explains the first clip; else every window of the video, `hop` frames apart

    async def run(self, row: ManifestRow, specs: list[MethodSpec]) -> list[str]:
        """All pending units of one video; returns each unit's status. Nothing raised here ends the run: a
        failure is an error row per unit, after up to TRANSIENT_RETRIES retries when Ray lost an actor,
        node or object on the way (the work is pure compute, so redoing it is safe; stored units stay)."""
        statuses: list[str] = []
        pending = list(specs)
        for attempt in range(TRANSIENT_RETRIES + 1):
            try:
                await self._once(row, pending, statuses)
                return statuses
            except TRANSIENT as exc:
                lost = exc
                await asyncio.sleep(min(2.0 ** attempt, 30.0))
        failure = Failure.of(lost, row.path)
        return statuses + [self.recorder.record_failure(row, spec, failure) for spec in pending]

    async def _once(self, row: ManifestRow, pending: list[MethodSpec], statuses: list[str]) -> None:
        """Prepare the video and run its pending units, moving each recorded unit from `pending` to `statuses`."""
        try:
            # the clip stays in the object store: model actors read it by reference, the driver never holds it
            prepared_ref, clip_ref = self.pool.next_preparer().prepare_by_reference.options(num_returns=2).remote(
                row, self.flow_methods, self.hop is not None)
            prepared = await prepared_ref
            failure = prepared if isinstance(prepared, Failure) else label_failure(row, self.num_classes)
            if failure is None:
                with self.pool.model() as actor:  # a whole video's: the mean of its windows' logits
                    call = actor.logits.remote(clip_ref) if self.hop is None else actor.video_logits.remote(
                        clip_ref, self.hop)
                    logits = (await call).value
        except TRANSIENT:
            raise
        except Exception as exc:  # noqa: BLE001 - any exception of one video is that video's error rows
            failure = Failure.of(exc, row.path)
        while pending:
            spec = pending[0]
            try:
                if failure is not None:
                    status = self.recorder.record_failure(row, spec, failure)
                else:
                    status = self.recorder.record(await self._unit(prepared, clip_ref, logits, spec, not statuses))
            except TRANSIENT:
                raise
            except Exception as exc:  # noqa: BLE001 - scoring or storing one unit failed: its error row
                status = self.recorder.record_failure(row, spec, Failure.of(exc, row.path))
            statuses.append(status)
            pending.pop(0)

    async def _unit(self, prepared: PreparedVideo, clip_ref: ray.ObjectRef, logits: torch.Tensor,
                    spec: MethodSpec, first: bool) -> FinishedUnit:
        """Explain one video with one method and score the map."""
        if self.hop is not None:
            return await whole_unit(self.pool, self.config, prepared, clip_ref, logits, spec, first, self.hop)
        began = time.perf_counter()
        method = get_method(spec.name)
        params = method.resolve(spec.params)
        target = prepared.row.label if prepared.row.label is not None else int(logits.argmax())
        flow = prepared.flows.get(params.flow) if method.needs_flow else None
        if issubclass(method, OcclusionMethod):
            result = await sharded_map(self.pool, spec.name, params, method, prepared, clip_ref, logits, target,
                                       flow)
        else:
            with self.pool.model() as actor:
                result = await actor.attribute.remote(spec.name, params, clip_ref, target, flow)
        require_finite(result.value, prepared, spec)
        explained = time.perf_counter()
        faith = await sharded_faithfulness(self.pool, clip_ref, result.value, target, self.config.metric_batch_size)
        pointing = pointing_game(result.value, prepared.boxes) if prepared.row.boxes is not None else None
        finished = time.perf_counter()
        flow_seconds = prepared.timings.get(f"flow:{params.flow}", 0.0) if method.needs_flow else 0.0
        stages = {"explain": Stage(explained - began, 1, "maps"),
                  "model_forward": Stage(result.seconds, result.clips, "clips"),
                  "metrics": Stage(finished - explained, faith.clips, "clips"),
                  "total": Stage(flow_seconds + finished - began, 1, "maps")}
        if result.masks is not None:
            stages["masks"] = result.masks
        if first:  # decode and flow are shared by the video's units: stored once, with its first unit
            stages |= prepared.stages()
        score = float(target_scores(logits[None], target, params.score)[0])
        return FinishedUnit(prepared, spec, params, logits, target, score, result, faith.value, pointing, stages,
                            flow_seconds)


def shards(count: int, parts: int) -> list[slice]:
    """`count` items (a map's masks, its curves' points) in at most `parts` contiguous, non-empty slices of sizes
    differing by at most one: one shard per place (pool.shard_actors)."""
    bounds = [count * part // parts for part in range(parts + 1)]
    return [slice(start, stop) for start, stop in zip(bounds, bounds[1:]) if stop > start]


async def sharded_map(pool: ActorPool, name: str, params: MethodParams, method: type[OcclusionMethod],
                      prepared: PreparedVideo, clip_ref: ray.ObjectRef, logits: torch.Tensor, target: int,
                      flow: torch.Tensor | None) -> ModelResult:
    """One occlusion map, its masks split into one contiguous shard per place (GPU, or CPU actor), the score drops
    aggregated here. Busy seconds add the driver's tubes and aggregation to every shard's: the map's cost on one device."""
    began = time.perf_counter()
    tubes = method.tubes(params, torch.empty(prepared.shape, device="meta"), flow)  # tubes need only the shape
    tube_seconds = time.perf_counter() - began
    tubes_ref = ray.put(tubes)
    index = torch.arange(len(tubes))
    driver = time.perf_counter() - began

    def scored(how: MethodParams, models: list[ray.actor.ActorHandle]) -> asyncio.Future[list[ModelResult]]:
        """Every shard's scores under `how`."""
        return asyncio.gather(*(
            actor.occlusion_scores.remote(name, how, clip_ref, target, tubes_ref, index[shard], logits)
            for actor, shard in zip(models, shards(len(tubes), len(models)))))
    with pool.shard_actors() as models:
        rounds = [await scored(params, models)]
        if any(result.inference.mismatch for result in rounds[0]):  # a shard's check failed: every shard goes dense
            rounds.append(await scored(dataclasses.replace(params, incremental="off"), models))
    results = [result for done in rounds for result in done]
    began = time.perf_counter()
    scores = torch.cat([result.value for result in rounds[-1]])
    base = target_scores(logits[None], target, params.score)[0]
    saliency = aggregate(tubes, base - scores, params.aggregate)
    driver += time.perf_counter() - began
    inference = Inference.of_shards([result.inference for result in results])
    masks = Stage(tube_seconds + sum(r.masks.seconds for r in results if r.masks), len(tubes), "masks")
    return ModelResult(saliency, sum(r.seconds for r in results), sum(r.clips for r in results) + 1,
                       driver + sum(r.busy for r in results), inference, masks)


async def sharded_faithfulness(pool: ActorPool, clip_ref: ray.ObjectRef, saliency: torch.Tensor, target: int,
                               batch_size: int, steps: int = STEPS) -> ModelResult:
    """Deletion and insertion of a map with their 2 x (steps + 1) points split into one contiguous shard per
    place, like the map's masks; the value is the Faithfulness, clips and seconds summed over shards."""
    points = [(curve, point) for curve in CURVES for point in range(steps + 1)]
    with pool.shard_actors() as models:
        parts = [[(curve, [point for name, point in points[shard] if name == curve]) for curve in CURVES
                  if any(name == curve for name, _ in points[shard])] for shard in shards(len(points), len(models))]
        results: list[ModelResult] = await asyncio.gather(*(
            actor.curve_points.remote(clip_ref, saliency, target, part, batch_size)
            for actor, part in zip(models, parts)))
    pieces: dict[str, list[torch.Tensor]] = {curve: [] for curve in CURVES}
    for part, result in zip(parts, results):
        for (curve, _), scores in zip(part, result.value):
            pieces[curve].append(scores)
    faith = Faithfulness.of(*(torch.cat(pieces[curve]) for curve in CURVES))
    return ModelResult(faith, sum(r.seconds for r in results), sum(r.clips for r in results),
                       sum(r.busy for r in results))


def label_failure(row: ManifestRow, num_classes: int) -> Failure | None:
    """A label outside the model's classes is the video's failure (kind `label`), found before any scoring."""
    if row.label is not None and not 0 <= row.label < num_classes:
        return Failure("label", f"{row.video_id}: label {row.label} is outside the model's "
                                f"{num_classes} classes (0..{num_classes - 1})")
    return None
