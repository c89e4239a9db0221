"""Turning a finished unit (one video x one method) into store rows and files: metrics, timings, the map,
and the run's own row with its provenance. Units are stored at once, or inside `buffered()` by a background
writer several per file (engine.store.buffered), so the event loop never waits on the disk."""

from __future__ import annotations

import json
import platform
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch

from aosa.engine.runtime.explain import inference_fields
from aosa.engine.runtime.provenance import git_sha, package_versions
from aosa.engine.runtime.video_metrics import VideoMetrics
from aosa.engine.runtime.workers import Failure, ModelResult, PreparedVideo, Stage
from aosa.engine.store.buffered import MAX_SECONDS, MAX_UNITS, UnitWriter
from aosa.engine.store.previews import preview_path
from aosa.engine.store.rows import MapFile, PreviewFile, map_file, unit_rows
from aosa.engine.store.writer import RunWriter
from aosa.kernels.metrics import Faithfulness, Pointing
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams
from aosa.schemas.run_config import MethodSpec, RunConfig


def now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class FinishedUnit:
    """Everything computed for one unit: its map and how it was made, its metrics and its stage timings."""

    prepared: PreparedVideo
    spec: MethodSpec
    params: MethodParams
    logits: torch.Tensor
    target: int
    score: float
    result: ModelResult
    faith: Faithfulness
    pointing: Pointing | None
    stages: dict[str, Stage]
    flow_seconds: float
    video: VideoMetrics | None = None  # a whole-video unit's own metrics, beside its first clip's


class UnitRecorder:
    """Writes one run's units and run rows through the run's writer; every unit lands once, in one write."""

    def __init__(self, config: RunConfig, store: RunWriter) -> None:
        self.config, self.store = config, store
        self._writer: UnitWriter | None = None

    @contextmanager
    def buffered(self, max_units: int = MAX_UNITS, max_seconds: float = MAX_SECONDS) -> Iterator[UnitRecorder]:
        """Within it, units are stored by a background writer, `max_units` per file or every `max_seconds`;
        leaving it stores what is buffered and raises a failed write (engine.store.buffered)."""
        with UnitWriter(self.store, max_units, max_seconds) as writer:
            self._writer = writer
            try:
                yield self
            finally:
                self._writer = None

    def keys(self, row: ManifestRow, spec: MethodSpec) -> dict[str, Any]:
        return {"run_id": self.config.run_id, "video_id": row.video_id, "model": self.config.model,
                "method": spec.key, "method_name": spec.name, "created_at": now()}

    def record(self, unit: FinishedUnit) -> str:
        """Store the unit's map, metrics and timings (or hand them to the buffered writer); returns "ok"."""
        row, saliency = unit.prepared.row, unit.result.value
        saved = map_file(self.config.run_id, row.video_id, self.config.model, unit.spec.key, saliency.numpy())
        faith, pointing = unit.faith, unit.pointing
        metrics = {
            **self.keys(row, unit.spec), "status": "ok", "label": row.label, "target": unit.target,
            "predicted": int(unit.logits.argmax()), "score": unit.score,
            "deletion_auc": faith.deletion_auc, "insertion_auc": faith.insertion_auc, "overall": faith.overall,
            "deletion_curve": faith.deletion.tolist(), "insertion_curve": faith.insertion.tolist(),
            "spt_hits": pointing.hits if pointing else None, "spt_frames": pointing.frames if pointing else None,
            "seconds_total": unit.flow_seconds + unit.result.busy, "seconds_model": unit.result.seconds,
            "n_forward": unit.result.clips, "map_path": saved.path, "decoder": unit.prepared.decoder,
            **inference_fields(unit.result.inference), **(unit.video.columns() if unit.video else {}),
            "params": json.dumps(unit.params.to_dict(), sort_keys=True),
        }
        self._write(metrics, unit.stages, saved, self._preview(unit))
        return "ok"

    def _preview(self, unit: FinishedUnit) -> list[PreviewFile]:
        """The video's preview, stored with the unit that carries the video's decode stage (its first unit)."""
        if "decode" not in unit.stages or unit.prepared.preview is None:
            return []
        path = preview_path(self.config.run_id, self.config.model, unit.prepared.row.video_id)
        return [PreviewFile(path, unit.prepared.preview)]

    def record_failure(self, row: ManifestRow, spec: MethodSpec, failure: Failure) -> str:
        """Store a failed unit as a metrics row with its error kind and message; returns "error"."""
        metrics = {**self.keys(row, spec), "status": "error", "error_kind": failure.kind, "error": failure.message,
                   "label": row.label, "params": json.dumps(spec.params.to_dict(), sort_keys=True)}
        self._write(metrics, {}, None)
        return "error"

    def _write(self, metrics: dict[str, Any], stages: dict[str, Stage], saved: MapFile | None,
               previews: Sequence[PreviewFile] = ()) -> None:
        keys = {key: metrics[key] for key in ("run_id", "video_id", "model", "method", "created_at")}
        timings = [{**keys, "stage": name, "seconds": float(stage.seconds), "items": stage.items, "unit": stage.unit}
                   for name, stage in stages.items()]
        maps = [] if saved is None else [{**keys, "path": saved.path, "shape": list(saved.values.shape),
                                          "dtype": "float16"}]
        unit = unit_rows(self.config.run_id, [metrics], timings, maps, [saved] if saved else [], previews)
        if self._writer is not None:
            self._writer.add(unit)
        else:
            self.store.write_units([unit])

    def record_run(self, status: str, device: str) -> None:
        """A `runs` row: the config, versions, git commit, host and device of the run, in state `status`."""
        self.store.write_run({"run_id": self.config.run_id, "created_at": now(),
                              "config": json.dumps(self.config.to_dict()), "versions": json.dumps(package_versions()),
                              "git_sha": git_sha(), "host": platform.node(), "device": device, "status": status})
