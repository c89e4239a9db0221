"""The evaluation scheduler: videos stream through decode actors, their masks are sharded across model
actors, and every finished (video, method) unit is written to the result store once.

At most `max_videos_in_flight` videos are decoded or scored at a time, so memory stays bounded whatever
the manifest's length. A failure of one video or unit becomes a stored error row; the run goes on.
The actors live in `engine.runtime.pool`, the rows are written by `engine.runtime.recorder`.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import ray
import torch
from tqdm import tqdm

from engine.errors import ConfigError
from engine.runtime.pool import ActorPool
from engine.runtime.recorder import FinishedUnit, UnitRecorder
from engine.runtime.workers import Failure, ModelResult, PreparedVideo, Stage
from engine.store.results import ResultStore
from kernels.methods import get_method
from kernels.methods.occlusion_base import OcclusionMethod
from kernels.metrics import pointing_game
from kernels.occlusion import aggregate
from kernels.scoring import target_scores
from schemas.manifest import ManifestRow
from schemas.method_params import MethodParams
from schemas.run_config import MethodSpec, RunConfig


@dataclass(frozen=True)
class Summary:
    """Counts of one run: units stored ok, units stored as errors, units skipped as already stored."""

    ok: int
    failed: int
    skipped: int


class Evaluation:
    """One run over a manifest: schedules each video's units on the actor pool and records them."""

    def __init__(self, config: RunConfig, store: ResultStore) -> None:
        for spec in config.methods:
            try:
                get_method(spec.name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        self.config, self.store = config, store
        self.pool = ActorPool(config)
        self.recorder = UnitRecorder(config, store)
        self.preprocessing, self.num_classes = self.pool.describe["preprocessing"], self.pool.describe["num_classes"]
        self.device = f'{self.pool.describe["device"]} ({self.pool.describe["backend"]})'
        self.flow_methods = tuple(sorted({spec.params.flow for spec in config.methods
                                          if get_method(spec.name).needs_flow}))

    def close(self) -> None:
        self.pool.close()

    def __enter__(self) -> Evaluation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, rows: list[ManifestRow]) -> Summary:
        """Evaluate every (video, method) unit not stored yet; returns the counts."""
        self.recorder.record_run("running", self.device)
        self.store.discard_unfinished(self.config.run_id)  # what a crashed run left half-written
        done = self.store.stored_units(self.config.run_id)
        todo = [(row, [spec for spec in self.config.methods if (row.video_id, self.config.model, spec.key) not in done])
                for row in rows]
        todo = [(row, specs) for row, specs in todo if specs]
        skipped = len(rows) * len(self.config.methods) - sum(len(specs) for _, specs in todo)
        counts = asyncio.run(self._run_all(todo))
        self.recorder.record_run("finished", self.device)
        return Summary(ok=counts["ok"], failed=counts["error"], skipped=skipped)

    async def _run_all(self, todo: list[tuple[ManifestRow, list[MethodSpec]]]) -> dict[str, int]:
        slots = asyncio.Semaphore(self.config.max_videos_in_flight)
        counts = {"ok": 0, "error": 0}
        with tqdm(total=len(todo), unit="video", desc=f"evaluate {self.config.run_id}", dynamic_ncols=True) as bar:
            async def one(row: ManifestRow, specs: list[MethodSpec]) -> None:
                async with slots:
                    for status in await self._video(row, specs):
                        counts[status] += 1
                bar.update(1)
                bar.set_postfix(ok=counts["ok"], errors=counts["error"])
            await asyncio.gather(*(one(row, specs) for row, specs in todo))
        return counts

    async def _video(self, row: ManifestRow, specs: list[MethodSpec]) -> list[str]:
        """All pending units of one video; returns each unit's status."""
        prepared = await self.pool.next_preparer().prepare.remote(row, self.flow_methods)
        if isinstance(prepared, Failure):
            return [self.recorder.record_failure(row, spec, prepared) for spec in specs]
        failure = self._check_label(row)
        if failure is not None:
            return [self.recorder.record_failure(row, spec, failure) for spec in specs]
        clip_ref = ray.put(prepared.clip.tensor)
        logits = await self.pool.next_model().logits.remote(clip_ref)
        statuses = []
        for index, spec in enumerate(specs):
            try:
                unit = await self._unit(prepared, clip_ref, logits.value, spec, first=index == 0)
                statuses.append(self.recorder.record(unit))
            except (ray.exceptions.RayError, ValueError, RuntimeError) as exc:
                statuses.append(self.recorder.record_failure(row, spec, Failure.of(_cause(exc))))
        return statuses

    def _check_label(self, row: ManifestRow) -> Failure | None:
        if row.label is not None and not 0 <= row.label < self.num_classes:
            return Failure("label", f"{row.video_id}: label {row.label} is outside the model's "
                                    f"{self.num_classes} classes (0..{self.num_classes - 1})")
        return None

    async def _unit(self, prepared: PreparedVideo, clip_ref: ray.ObjectRef, logits: torch.Tensor,
                    spec: MethodSpec, first: bool) -> FinishedUnit:
        """Explain one video with one method and score the map."""
        began = time.perf_counter()
        method = get_method(spec.name)
        params = method.resolve(spec.params)
        target = prepared.row.label if prepared.row.label is not None else int(logits.argmax())
        flow = prepared.flows.get(params.flow) if method.needs_flow else None
        if issubclass(method, OcclusionMethod):
            result = await self._sharded_map(spec.name, params, method, prepared, clip_ref, logits, target, flow)
        else:
            result = await self.pool.next_model().attribute.remote(spec.name, params, clip_ref, target, flow)
        explained = time.perf_counter()
        faith = await self.pool.next_model().faithfulness.remote(clip_ref, result.value, target,
                                                                 self.config.metric_batch_size)
        pointing = pointing_game(result.value, prepared.boxes) if prepared.row.boxes is not None else None
        finished = time.perf_counter()
        flow_seconds = prepared.timings.get(f"flow:{params.flow}", 0.0) if method.needs_flow else 0.0
        stages = {"explain": Stage(explained - began, 1, "maps"),
                  "model_forward": Stage(result.seconds, result.clips, "clips"),
                  "metrics": Stage(finished - explained, faith.clips, "clips"),
                  "total": Stage(flow_seconds + finished - began, 1, "maps")}
        if first:  # decode and flow are shared by the video's units: stored once, with its first unit
            stages |= prepared.stages()
        score = float(target_scores(logits[None], target, params.score)[0])
        return FinishedUnit(prepared, spec, params, logits, target, score, result, faith.value, pointing, stages,
                            flow_seconds)

    async def _sharded_map(self, name: str, params: MethodParams, method: type[OcclusionMethod], prepared: PreparedVideo,
                           clip_ref: ray.ObjectRef, logits: torch.Tensor, target: int,
                           flow: torch.Tensor | None) -> ModelResult:
        """Split the masks into one contiguous shard per model actor; aggregate the score drops here. Busy
        seconds add the driver's tubes and aggregation to every shard's: the map's cost on one device."""
        began = time.perf_counter()
        tubes = method.tubes(params, prepared.clip.tensor, flow)
        tubes_ref = ray.put(tubes)
        models = self.pool.models
        shards = [shard for shard in torch.arange(len(tubes)).tensor_split(len(models)) if len(shard)]
        driver = time.perf_counter() - began
        results: list[ModelResult] = await asyncio.gather(*(
            actor.occlusion_scores.remote(name, params, clip_ref, target, tubes_ref, shard)
            for actor, shard in zip(models, shards)))
        began = time.perf_counter()
        scores = torch.cat([result.value for result in results])
        base = target_scores(logits[None], target, params.score)[0]
        saliency = aggregate(tubes, base - scores, params.aggregate)
        driver += time.perf_counter() - began
        return ModelResult(saliency, sum(r.seconds for r in results), sum(r.clips for r in results) + 1,
                           driver + sum(r.busy for r in results))


def _cause(exc: BaseException) -> BaseException:
    """The user-level exception inside a Ray task error."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
