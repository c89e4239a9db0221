"""Nightly regression checks: versioned rules as data, per-method summaries of runs via SQL, verdicts.

A nightly run's verdict is a row of the run event log (`run_events`: every `runs` row, where the `runs` view
keeps each run's latest) whose config JSON is `{"nightly": {...}}` (preset, its version, the reference forward
time per model, and once judged the rules version and the judgement); the latest such row of a run is its
current state and its status is "evaluated", "passed" or "failed".

Speed is compared as a ratio measured inside one run: mean seconds per map / seconds of one reference
forward pass of the same model (`engine.models.timing`), so a slower machine is not a regression.
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from aosa.engine.errors import ConfigError
from aosa.engine.store.sql import run_select
from aosa.schemas import tables

DEFAULT_RULES = Path(tables.__file__).parent / "regression_rules.json"  # beside the schemas of the tables it reads
HIGHER, LOWER = "higher", "lower"
# Metric of a run summary -> which direction is better (rules may name any of them).
METRICS: dict[str, str] = {"deletion_auc": LOWER, "insertion_auc": HIGHER, "overall": HIGHER, "spt": HIGHER,
                           "seconds_per_map": LOWER, "speed_ratio": LOWER}
RULE_KEYS = {"metric", "method", "model", "max_drop", "max_increase", "relative", "note"}

Summary = dict[tuple[str, str], dict[str, Any]]  # (method, model) -> metric -> value

SUMMARY_SQL = """
WITH verdicts AS (
    SELECT run_id, arg_max(config, created_at) AS config FROM run_events
    WHERE json_exists(config, '$.nightly') GROUP BY run_id),
reference AS (
    SELECT run_id, ref.model AS model, ref.seconds AS seconds
    FROM verdicts, unnest(from_json(config -> '$.nightly.reference',
                                    '[{"model": "VARCHAR", "seconds": "DOUBLE"}]')) AS t(ref))
SELECT m.run_id, m.method, any_value(m.method_name) AS method_name, m.model, count(*) AS videos,
       avg(deletion_auc) AS deletion_auc, avg(insertion_auc) AS insertion_auc, avg(overall) AS overall,
       sum(spt_hits) FILTER (WHERE spt_frames > 0) AS spt_hits,
       sum(spt_frames) FILTER (WHERE spt_frames > 0) AS spt_frames,
       sum(spt_hits) FILTER (WHERE spt_frames > 0) / sum(spt_frames) FILTER (WHERE spt_frames > 0) AS spt,
       avg(seconds_total) AS seconds_per_map, any_value(r.seconds) AS reference_seconds,
       avg(seconds_total) / any_value(r.seconds) AS speed_ratio
FROM metrics AS m LEFT JOIN reference AS r ON r.run_id = m.run_id AND r.model = m.model
WHERE list_contains(?, m.run_id) AND m.status = 'ok'
GROUP BY m.run_id, m.method, m.model ORDER BY m.method, m.model
"""

NIGHTLY_RUNS_SQL = """
SELECT run_id, min(created_at) AS started, arg_max(status, created_at) AS status,
       arg_max(config, created_at) AS config, arg_max(versions, created_at) AS versions,
       arg_max(git_sha, created_at) AS git_sha, arg_max(host, created_at) AS host,
       arg_max(device, created_at) AS device
FROM run_events WHERE json_exists(config, '$.nightly') GROUP BY run_id ORDER BY started, run_id
"""


class RulesError(ConfigError):
    """A regression rules file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class RuleResult:
    """One rule applied to one (method, model): both values, the bound tonight had to meet, the verdict."""

    metric: str
    method: str
    model: str
    baseline: float
    tonight: float | None
    limit: float
    allowed: str
    passed: bool

    def describe(self) -> str:
        """One line: which rule, both values and the allowed change."""
        tonight = "missing" if self.tonight is None else f"{self.tonight:.4f}"
        return (f"{self.metric} of {self.method} on {self.model}: baseline {self.baseline:.4f}, tonight {tonight}, "
                f"allowed {self.allowed} (limit {self.limit:.4f})")


@dataclass(frozen=True)
class Rule:
    """Tonight's `metric` may fall by at most `max_drop` or rise by at most `max_increase` (a fraction of the
    baseline when `relative`), for the methods and models matching the fnmatch patterns."""

    metric: str
    max_drop: float | None = None
    max_increase: float | None = None
    relative: bool = False
    method: str = "*"
    model: str = "*"

    def matches(self, metric: str, method: str, model: str) -> bool:
        return metric == self.metric and fnmatch.fnmatchcase(method, self.method) \
            and fnmatch.fnmatchcase(model, self.model)

    def check(self, method: str, model: str, baseline: float, tonight: float | None) -> RuleResult:
        """Apply the rule to one (method, model); a value missing tonight breaks it."""
        amount = self.max_drop if self.max_drop is not None else self.max_increase
        change = amount * abs(baseline) if self.relative else amount
        drop = self.max_drop is not None
        limit = baseline - change if drop else baseline + change
        allowed = f"{'drop' if drop else 'increase'} {amount:.0%}" if self.relative else \
            f"{'drop' if drop else 'increase'} {amount:g}"
        passed = tonight is not None and (tonight >= limit if drop else tonight <= limit)
        return RuleResult(self.metric, method, model, baseline, tonight, limit, allowed, passed)


@dataclass(frozen=True)
class Rules:
    """A versioned rules file: for each metric and (method, model) the first matching rule applies."""

    version: int
    rules: tuple[Rule, ...]
    path: Path

    def rule_for(self, metric: str, method: str, model: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.matches(metric, method, model)), None)

    def to_dict(self) -> dict[str, Any]:
        return {"version": self.version, "file": str(self.path), "rules": [asdict(rule) for rule in self.rules]}


def load_rules(path: Path = DEFAULT_RULES) -> Rules:
    """Read and validate a rules file; every problem is a RulesError naming the file and the rule."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RulesError(f"{path}: rules file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RulesError(f"{path}: not a JSON rules file ({exc})") from None
    if not isinstance(data, dict):
        raise RulesError(f'{path}: expected an object {{"version": N, "rules": [...]}}')
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RulesError(f"{path}: \"version\" must be a positive integer, got {version!r}")
    entries = data.get("rules")
    if not isinstance(entries, list) or not entries:
        raise RulesError(f'{path}: "rules" must be a non-empty list')
    return Rules(version, tuple(_rule(path, index, entry) for index, entry in enumerate(entries)), path)


def _rule(path: Path, index: int, entry: object) -> Rule:
    """Rule `index` of the file, checked key by key."""
    where = f"{path}: rules[{index}]"
    if not isinstance(entry, dict):
        raise RulesError(f"{where}: must be an object, got {entry!r}")
    unknown = sorted(set(entry) - RULE_KEYS)
    if unknown:
        raise RulesError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(RULE_KEYS))}")
    if entry.get("metric") not in METRICS:
        raise RulesError(f"{where}: unknown metric {entry.get('metric')!r}; known: {', '.join(METRICS)}")
    bounds = [key for key in ("max_drop", "max_increase") if key in entry]
    if len(bounds) != 1:
        raise RulesError(f"{where}: give exactly one of max_drop and max_increase")
    amount = entry[bounds[0]]
    if not isinstance(amount, (int, float)) or isinstance(amount, bool) or not 0 <= amount < float("inf"):
        raise RulesError(f"{where}: {bounds[0]} must be a number at least 0, got {amount!r}")
    for key in ("method", "model"):
        if not isinstance(entry.get(key, "*"), str):
            raise RulesError(f"{where}: {key} must be a text pattern, got {entry[key]!r}")
    if not isinstance(entry.get("relative", False), bool):
        raise RulesError(f"{where}: relative must be true or false")
    return Rule(**{key: value for key, value in entry.items() if key != "note"})


def judge(rules: Rules, baseline: Summary, tonight: Summary) -> list[RuleResult]:
    """Every applicable rule on every (method, model) the baseline measured; metrics it lacks are skipped."""
    results = []
    for (method, model), before in sorted(baseline.items()):
        after = tonight.get((method, model), {})
        for metric in METRICS:
            rule = rules.rule_for(metric, method, model)
            if rule is not None and before.get(metric) is not None:
                results.append(rule.check(method, model, before[metric], after.get(metric)))
    return results


def summaries(con: duckdb.DuckDBPyConnection, run_ids: list[str]) -> dict[str, Summary]:
    """Per run, per (method, model): mean deletion/insertion/over-all, S-PT, seconds per map, speed ratio."""
    columns, rows = run_select(con, SUMMARY_SQL, [run_ids])
    result: dict[str, Summary] = {run_id: {} for run_id in run_ids}
    for row in rows:
        record = dict(zip(columns, row))
        result[record["run_id"]][record["method"], record["model"]] = record
    return result


@dataclass(frozen=True)
class NightlyRun:
    """A run with a nightly verdict row: when it started, its latest status, and that row's fields."""

    run_id: str
    started: datetime
    status: str
    nightly: dict[str, Any]
    row: dict[str, Any]

    @property
    def preset(self) -> str:
        return f'{self.nightly.get("preset")} v{self.nightly.get("preset_version")}'

    @property
    def rules_version(self) -> int | None:
        return self.nightly.get("rules", {}).get("version")


def nightly_runs(con: duckdb.DuckDBPyConnection) -> dict[str, NightlyRun]:
    """Every run with a nightly verdict row, oldest first."""
    columns, rows = run_select(con, NIGHTLY_RUNS_SQL)
    runs = {}
    for values in rows:
        row = dict(zip(columns, values))
        runs[row["run_id"]] = NightlyRun(row["run_id"], row["started"], row["status"],
                                         json.loads(row["config"])["nightly"], row)
    return runs


def previous_passed(runs: dict[str, NightlyRun], tonight: NightlyRun) -> NightlyRun | None:
    """The latest nightly run of the same preset that started before `tonight` and passed."""
    earlier = [run for run in runs.values() if run.status == "passed" and run.started < tonight.started
               and run.nightly.get("preset") == tonight.nightly.get("preset")]
    return earlier[-1] if earlier else None
