"""Everything one run's HTML report shows, fetched from the store (and, for overlays, the run's clips).

The renderer (`engine.reporting.html_report`) receives a `ReportData` and fetches nothing itself.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.errors import AosaError, ConfigError
from aosa.engine.reporting.clips import run_parts, source_frames
from aosa.engine.reporting.regression import NightlyRun, Summary, nightly_runs, summaries
from aosa.engine.serve.registry import running_server
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import run_select

TREND_RUNS = 30
OVERLAY_CLIPS = 2

CURVES_SQL = """
SELECT method, model, deletion_curve, insertion_curve FROM metrics
WHERE run_id = ? AND status = 'ok' AND deletion_curve IS NOT NULL ORDER BY method, model
"""
MAPS_SQL = """
SELECT model, video_id, method, map_path FROM metrics
WHERE run_id = ? AND status = 'ok' AND map_path IS NOT NULL ORDER BY model, video_id, method
"""

Curves = dict[str, dict[str, dict[str, np.ndarray]]]  # model -> method -> {"deletion"|"insertion": mean curve}


@dataclass(frozen=True)
class ClipMaps:
    """One clip's frames (T,H,W,3 uint8) at model resolution and its maps (T,H,W) by method, in run order."""

    model: str
    video_id: str
    frames: np.ndarray
    maps: list[tuple[str, np.ndarray]]


@dataclass(frozen=True)
class ReportData:
    """A run, its judgement and baseline, summaries of it and of its trend runs, curves and overlay clips."""

    run_id: str
    run: NightlyRun | None
    runs: dict[str, NightlyRun]
    trend: list[str]
    summary: dict[str, Summary]
    curves: Curves
    clips: list[ClipMaps] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # why some overlays are missing
    browser: str | None = None  # the address of a running `aosa serve` of the store, which each clip links into

    @property
    def judgement(self) -> dict[str, Any]:
        return self.run.nightly.get("judgement", {}) if self.run else {}

    @property
    def baseline(self) -> str | None:
        return self.judgement.get("baseline")


def gather_report_data(store: StoreReader, run_id: str) -> ReportData:
    """Query the store for the run's report; ConfigError when the run has no metrics."""
    with store.connect() as con:
        _, rows = run_select(con, "SELECT count(*) FROM metrics WHERE run_id = ?", [run_id])
        if rows[0][0] == 0:
            raise ConfigError(f"run {run_id!r} has no metrics rows in the store {store.root}")
        runs = nightly_runs(con)
        run = runs.get(run_id)
        trend = trend_runs(runs, run) if run else []
        baseline = run.nightly.get("judgement", {}).get("baseline") if run else None
        summary = summaries(con, list(dict.fromkeys([run_id, *trend, *([baseline] if baseline else [])])))
        curves = mean_curves(con, run_id)
        parts, maps = run_parts(con, run_id), _maps(con, run_id)
    clips, notes = [], []
    for part in parts:
        try:
            clips.extend(overlay_clips(store, part, maps))
        except AosaError as exc:
            notes.append(f"overlays of {part['model']} unavailable: {exc}")
    return ReportData(run_id, run, runs, trend, summary, curves, clips, notes, running_server(store.root))


def trend_runs(runs: dict[str, NightlyRun], run: NightlyRun) -> list[str]:
    """The last TREND_RUNS nightly runs of the run's preset that started no later than it, oldest first."""
    same = [other.run_id for other in runs.values()
            if other.nightly.get("preset") == run.nightly.get("preset") and other.started <= run.started]
    return same[-TREND_RUNS:]


def mean_curves(con: duckdb.DuckDBPyConnection, run_id: str) -> Curves:
    """model -> method -> {"deletion": mean curve, "insertion": mean curve} over the run's videos."""
    _, rows = run_select(con, CURVES_SQL, [run_id])
    grouped: dict[tuple[str, str], list[tuple[list[float], list[float]]]] = defaultdict(list)
    for method, model, deletion, insertion in rows:
        grouped[model, method].append((deletion, insertion))
    curves: Curves = defaultdict(dict)
    for (model, method), pairs in grouped.items():
        deletion, insertion = (np.mean(np.array(side, dtype=np.float64), axis=0) for side in zip(*pairs))
        curves[model][method] = {"deletion": deletion, "insertion": insertion}
    return curves


def _maps(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[tuple[str, str], dict[str, str]]:
    """(model, video_id) -> method -> map path, for the run's ok units."""
    _, rows = run_select(con, MAPS_SQL, [run_id])
    maps: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for model, video_id, method, path in rows:
        maps[model, video_id][method] = path
    return maps


def overlay_clips(store: StoreReader, part: dict[str, Any], maps: dict[tuple[str, str], dict[str, str]]
                  ) -> list[ClipMaps]:
    """The first OVERLAY_CLIPS clips of a part's manifest that have maps, decoded as the run decoded them."""
    model = part["model"]
    rows = [row for row in read_manifest(Path(part["manifest"])) if (model, row.video_id) in maps]
    if not rows:
        return []
    order = [spec["key"] for spec in part["methods"]]
    clips = []
    for row in rows[:OVERLAY_CLIPS]:
        frames = source_frames(part, row).frames
        by_method = maps[model, row.video_id]
        clips.append(ClipMaps(model, row.video_id, frames,
                              [(method, store.load_map(by_method[method]).astype(np.float32))
                               for method in order if method in by_method]))
    return clips
