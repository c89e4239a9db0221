"""The evaluation scheduler: videos stream through decode actors, their masks are sharded across model
actors, and every finished (video, method) unit is written to the result store once.

At most `max_videos_in_flight` videos are decoded or scored at a time, so memory stays bounded whatever
the manifest's length. A failure of one video or unit becomes a stored error row; the run goes on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import platform
import subprocess
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import ray
import torch
from tqdm import tqdm

from engine.actors import ModelActor, VideoActor
from engine.errors import ConfigError
from engine.store import ResultStore
from engine.workers import Failure, ModelResult, PreparedVideo, Stage
from kernels.methods import get_method
from kernels.methods.occlusion_base import OcclusionMethod
from kernels.metrics import pointing_game
from kernels.occlusion import aggregate
from kernels.scoring import target_scores
from schemas.manifest import ManifestRow
from schemas.method_params import MethodParams
from schemas.run_config import MethodSpec, RunConfig


DECODE_GPU_SHARE = 0.1  # a decode actor with --decode-device cuda shares a GPU with the model actors
ACTOR_START_TIMEOUT = 600  # seconds; generous for a cluster that must first scale up a GPU node


@dataclass(frozen=True)
class Summary:
    """Counts of one run: units stored ok, units stored as errors, units skipped as already stored."""

    ok: int
    failed: int
    skipped: int


def now() -> datetime:
    return datetime.now(timezone.utc)


def git_sha() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


class Evaluation:
    """One run over a manifest: owns the actors, schedules the work, writes the store."""

    def __init__(self, config: RunConfig, store: ResultStore) -> None:
        self.config, self.store = config, store
        self.models: list[ray.actor.ActorHandle] = []
        self.preparers: list[ray.actor.ActorHandle] = []
        for spec in config.methods:
            try:
                get_method(spec.name)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        batch_size = max(spec.params.batch_size for spec in config.methods)
        self.models = [ModelActor.options(**self._model_resources()).remote(
            config.model, config.device, config.backend, max(batch_size, config.metric_batch_size),
            config.engine_cache) for _ in range(config.model_actors)]
        try:
            described = ray.get(self.models[0].describe.remote(), timeout=ACTOR_START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ConfigError(f"model actors did not start within {ACTOR_START_TIMEOUT} s: the Ray cluster lacks "
                              f"the resources for {config.model_actors} of them ({ray.available_resources()} free)"
                              ) from None
        self.preprocessing, self.num_classes = described["preprocessing"], described["num_classes"]
        self.device = f'{described["device"]} ({described["backend"]})'
        decode_gpus = {}
        if config.decode_device == "cuda":
            if ray.cluster_resources().get("GPU", 0) <= 0:
                raise ConfigError("--decode-device cuda: the Ray cluster has no GPUs")
            decode_gpus = {"num_gpus": DECODE_GPU_SHARE}
        self.preparers = [VideoActor.options(**decode_gpus).remote(self.preprocessing, config.decoder, config.start,
                                                                   config.decode_device)
                          for _ in range(config.decode_actors)]
        self._next_model = itertools.cycle(self.models)
        self._next_preparer = itertools.cycle(self.preparers)
        self.flow_methods = tuple(sorted({spec.params.flow for spec in config.methods
                                          if get_method(spec.name).needs_flow}))

    def close(self) -> None:
        """Stop this run's actors (also after a crash, so a resumed run in the same cluster finds room)."""
        for actor in [*self.models, *self.preparers]:
            ray.kill(actor)

    def __enter__(self) -> Evaluation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _model_resources(self) -> dict[str, float]:
        """GPU share of each model actor (the cluster's GPUs split evenly) for `cuda`, or `auto` on a GPU cluster."""
        gpus = ray.cluster_resources().get("GPU", 0)
        device = self.config.device
        if device == "cpu" or (device == "auto" and gpus <= 0):
            return {}
        if gpus <= 0:
            raise ConfigError(f"device {device!r}: the Ray cluster has no GPUs")
        return {"num_gpus": min(1.0, gpus / self.config.model_actors)}

    def run(self, rows: list[ManifestRow]) -> Summary:
        """Evaluate every (video, method) unit not stored yet; returns the counts."""
        self.store.write_run(self._run_row("running"))
        self.store.discard_unfinished(self.config.run_id)  # what a crashed run left half-written
        done = self.store.stored_units(self.config.run_id)
        todo = [(row, [spec for spec in self.config.methods if (row.video_id, self.config.model, spec.key) not in done])
                for row in rows]
        todo = [(row, specs) for row, specs in todo if specs]
        skipped = len(rows) * len(self.config.methods) - sum(len(specs) for _, specs in todo)
        counts = asyncio.run(self._run_all(todo))
        self.store.write_run(self._run_row("finished"))
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
        prepared = await next(self._next_preparer).prepare.remote(row, self.flow_methods)
        if isinstance(prepared, Failure):
            return [self._store_failure(row, spec, prepared) for spec in specs]
        failure = self._check_label(row)
        if failure is not None:
            return [self._store_failure(row, spec, failure) for spec in specs]
        clip_ref = ray.put(prepared.clip.tensor)
        logits = await next(self._next_model).logits.remote(clip_ref)
        statuses = []
        for index, spec in enumerate(specs):
            try:
                statuses.append(await self._unit(prepared, clip_ref, logits.value, spec, first=index == 0))
            except (ray.exceptions.RayError, ValueError, RuntimeError) as exc:
                statuses.append(self._store_failure(row, spec, Failure.of(_cause(exc))))
        return statuses

    def _check_label(self, row: ManifestRow) -> Failure | None:
        if row.label is not None and not 0 <= row.label < self.num_classes:
            return Failure("label", f"{row.video_id}: label {row.label} is outside the model's "
                                    f"{self.num_classes} classes (0..{self.num_classes - 1})")
        return None

    async def _unit(self, prepared: PreparedVideo, clip_ref: ray.ObjectRef, logits: torch.Tensor,
                    spec: MethodSpec, first: bool) -> str:
        """Explain one video with one method, score the map, store it."""
        began = time.perf_counter()
        method = get_method(spec.name)
        params = method.resolve(spec.params)
        predicted = int(logits.argmax())
        target = prepared.row.label if prepared.row.label is not None else predicted
        flow = prepared.flows.get(params.flow) if method.needs_flow else None
        if issubclass(method, OcclusionMethod):
            result = await self._sharded_map(spec.name, params, method, prepared, clip_ref, logits, target, flow)
        else:
            result = await next(self._next_model).attribute.remote(spec.name, params, clip_ref, target, flow)
        saliency, model_seconds, clips = result.value, result.seconds, result.clips
        explained = time.perf_counter()
        faith = await next(self._next_model).faithfulness.remote(clip_ref, saliency, target,
                                                                 self.config.metric_batch_size)
        pointing = pointing_game(saliency, prepared.boxes) if prepared.row.boxes is not None else None
        finished = time.perf_counter()
        flow_seconds = prepared.timings.get(f"flow:{params.flow}", 0.0) if method.needs_flow else 0.0
        map_path = self.store.save_map(self.config.run_id, prepared.row.video_id, self.config.model, spec.key,
                                       saliency.numpy())
        metrics = {
            **self._unit_keys(prepared.row, spec), "status": "ok", "label": prepared.row.label, "target": target,
            "predicted": predicted, "score": float(target_scores(logits[None], target, params.score)[0]),
            "deletion_auc": faith.value.deletion_auc, "insertion_auc": faith.value.insertion_auc,
            "overall": faith.value.overall, "deletion_curve": faith.value.deletion.tolist(),
            "insertion_curve": faith.value.insertion.tolist(),
            "spt_hits": pointing.hits if pointing else None, "spt_frames": pointing.frames if pointing else None,
            "seconds_total": flow_seconds + result.busy, "seconds_model": model_seconds, "n_forward": clips,
            "map_path": map_path, "params": json.dumps(params.to_dict(), sort_keys=True),
        }
        stages = {"explain": Stage(explained - began, 1, "maps"),
                  "model_forward": Stage(model_seconds, clips, "clips"),
                  "metrics": Stage(finished - explained, faith.clips, "clips"),
                  "total": Stage(flow_seconds + finished - began, 1, "maps")}
        if first:  # decode and flow are shared by the video's units: stored once, with its first unit
            stages |= prepared.stages()
        self._store(prepared.row, spec, metrics, stages, map_path, saliency.shape)
        return "ok"

    async def _sharded_map(self, name: str, params: MethodParams, method: type[OcclusionMethod], prepared: PreparedVideo,
                           clip_ref: ray.ObjectRef, logits: torch.Tensor, target: int,
                           flow: torch.Tensor | None) -> ModelResult:
        """Split the masks into one contiguous shard per model actor; aggregate the score drops here. Busy
        seconds add the driver's tubes and aggregation to every shard's: the map's cost on one device."""
        began = time.perf_counter()
        tubes = method.tubes(params, prepared.clip.tensor, flow)
        tubes_ref = ray.put(tubes)
        shards = [shard for shard in torch.arange(len(tubes)).tensor_split(len(self.models)) if len(shard)]
        driver = time.perf_counter() - began
        results: list[ModelResult] = await asyncio.gather(*(
            actor.occlusion_scores.remote(name, params, clip_ref, target, tubes_ref, shard)
            for actor, shard in zip(self.models, shards)))
        began = time.perf_counter()
        scores = torch.cat([result.value for result in results])
        base = target_scores(logits[None], target, params.score)[0]
        saliency = aggregate(tubes, base - scores, params.aggregate)
        driver += time.perf_counter() - began
        return ModelResult(saliency, sum(r.seconds for r in results), sum(r.clips for r in results) + 1,
                           driver + sum(r.busy for r in results))

    def _unit_keys(self, row: ManifestRow, spec: MethodSpec) -> dict[str, Any]:
        return {"run_id": self.config.run_id, "video_id": row.video_id, "model": self.config.model,
                "method": spec.key, "method_name": spec.name, "created_at": now()}

    def _store(self, row: ManifestRow, spec: MethodSpec, metrics: dict[str, Any], stages: dict[str, Stage],
               map_path: str | None, shape: tuple[int, ...] | None) -> None:
        keys = {key: metrics[key] for key in ("run_id", "video_id", "model", "method", "created_at")}
        timings = [{**keys, "stage": name, "seconds": float(stage.seconds), "items": stage.items, "unit": stage.unit}
                   for name, stage in stages.items()]
        maps = [] if map_path is None else [{**keys, "path": map_path, "shape": list(shape), "dtype": "float16"}]
        self.store.write_unit(self.config.run_id, [metrics], timings, maps)

    def _store_failure(self, row: ManifestRow, spec: MethodSpec, failure: Failure) -> str:
        metrics = {**self._unit_keys(row, spec), "status": "error", "error_kind": failure.kind,
                   "error": failure.message, "label": row.label,
                   "params": json.dumps(spec.params.to_dict(), sort_keys=True)}
        self._store(row, spec, metrics, {}, None, None)
        return "error"

    def _run_row(self, status: str) -> dict[str, Any]:
        return {"run_id": self.config.run_id, "created_at": now(), "config": json.dumps(self.config.to_dict()),
                "versions": json.dumps(package_versions()), "git_sha": git_sha(), "host": platform.node(),
                "device": self.device, "status": status}


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour changes the numbers."""
    names = ("aosa-engine", "torch", "torchvision", "opencv-contrib-python-headless", "av", "ray", "captum", "numpy")
    versions = {}
    for name in names:
        try:
            versions[name] = version(name)
        except Exception:  # not installed under that distribution name
            versions[name] = "missing"
    return versions


def _cause(exc: BaseException) -> BaseException:
    """The user-level exception inside a Ray task error."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
