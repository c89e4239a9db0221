"""What the Run page shows, each piece one DuckDB query over the run's partitions: the paper's tables with 95%
intervals over the videos, the paired difference of two methods (the README's paired query), the mean deletion and
insertion curves, the stage timings, and the failed units grouped by error kind."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import duckdb

from aosa.engine.store.sql import run_select

MEASURES = {"deletion": "deletion_auc", "insertion": "insertion_auc", "overall": "overall",
            "spt": "spt_hits::DOUBLE / nullif(spt_frames, 0)", "seconds": "seconds_total"}
EXAMPLES = 10  # failed units shown per error kind
METHODS_SQL = "SELECT DISTINCT method FROM metrics WHERE run_id = $run"


def _mean_and_half(name: str, expression: str) -> str:
    """Mean of a per-video value and the half-width of its 95% interval (1.96 standard errors)."""
    return f"avg({expression}) AS {name}, 1.96 * stddev_samp({expression}) / sqrt(count({expression})) AS {name}_ci"


SUMMARY_SQL = f"""
SELECT model, method, any_value(method_name) AS method_name, count(*) AS videos,
       {", ".join(_mean_and_half(name, expression) for name, expression in MEASURES.items())}
FROM metrics WHERE run_id = $run AND status = 'ok' GROUP BY model, method ORDER BY model, method
"""

PAIRED_SQL = f"""
WITH v AS (SELECT model, method, video_id, {", ".join(f"{e} AS {n}" for n, e in MEASURES.items())}
           FROM metrics WHERE run_id = $run AND status = 'ok')
SELECT x.model, count(*) AS videos,
       {", ".join(_mean_and_half(name, f"x.{name} - y.{name}") for name in MEASURES)}
FROM v AS x JOIN v AS y ON y.video_id = x.video_id AND y.model = x.model AND y.method = $b
WHERE x.method = $a GROUP BY x.model ORDER BY x.model
"""

CURVES_SQL = """
WITH points AS (
    SELECT model, method, unnest(deletion_curve) AS deletion, unnest(insertion_curve) AS insertion,
           generate_subscripts(deletion_curve, 1) AS step
    FROM metrics WHERE run_id = $run AND status = 'ok' AND deletion_curve IS NOT NULL)
SELECT model, method, list(deletion ORDER BY step) AS deletion, list(insertion ORDER BY step) AS insertion
FROM (SELECT model, method, step, avg(deletion) AS deletion, avg(insertion) AS insertion
      FROM points GROUP BY ALL) GROUP BY model, method ORDER BY model, method
"""

STAGES_SQL = """
SELECT stage, any_value(unit) AS unit, count(*) AS rows, sum(seconds) AS seconds, avg(seconds) AS mean_seconds,
       sum(items) AS items, sum(items) / nullif(sum(seconds), 0) AS items_per_second
FROM timings WHERE run_id = $run GROUP BY stage ORDER BY sum(seconds) DESC
"""

FAILURES_SQL = f"""
SELECT coalesce(error_kind, 'unknown') AS kind, count(*) OVER (PARTITION BY error_kind) AS units,
       video_id, model, method, error
FROM metrics WHERE run_id = $run AND status <> 'ok'
QUALIFY row_number() OVER (PARTITION BY error_kind ORDER BY video_id, model, method) <= {EXAMPLES}
ORDER BY units DESC, kind, video_id, model, method
"""


def run_methods(con: duckdb.DuckDBPyConnection, run_id: str, parts: list[dict[str, Any]]) -> list[str]:
    """The method keys the run stored units of, in the order its configs list them (others last, by name)."""
    order = list(dict.fromkeys(spec["key"] for part in parts for spec in part["methods"]))
    stored = [method for (method,) in run_select(con, METHODS_SQL, {"run": run_id})[1]]
    return sorted(stored, key=lambda method: (order.index(method) if method in order else len(order), method))


def _records(con: duckdb.DuckDBPyConnection, sql: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    columns, rows = run_select(con, sql, parameters)
    return [dict(zip(columns, row)) for row in rows]


def summary(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """Per (model, method): videos, and each measure's mean with its 95% half-width (S-PT per video)."""
    return _records(con, SUMMARY_SQL, {"run": run_id})


def paired(con: duckdb.DuckDBPyConnection, run_id: str, a: str, b: str) -> list[dict[str, Any]]:
    """Per model: videos both methods mapped, and the mean (a - b) of each measure with its 95% half-width."""
    return _records(con, PAIRED_SQL, {"run": run_id, "a": a, "b": b})


def mean_curves(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, dict[str, dict[str, list[float]]]]:
    """model -> "deletion" | "insertion" -> method -> the curve averaged point by point over the videos."""
    curves: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: {"deletion": {}, "insertion": {}})
    for row in _records(con, CURVES_SQL, {"run": run_id}):
        for side in ("deletion", "insertion"):
            curves[row["model"]][side][row["method"]] = row[side]
    return dict(curves)


def stages(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """Per stage: rows, seconds in all and per row, items and items per second (report --table stages)."""
    return _records(con, STAGES_SQL, {"run": run_id})


def failures(con: duckdb.DuckDBPyConnection, run_id: str) -> list[dict[str, Any]]:
    """Per error kind, most units first: how many units failed so, and the first EXAMPLES with their message."""
    kinds: dict[str, dict[str, Any]] = defaultdict(lambda: {"examples": []})
    for row in _records(con, FAILURES_SQL, {"run": run_id}):
        kind = kinds[row["kind"]]
        kind |= {"kind": row["kind"], "units": row["units"]}
        kind["examples"].append(row)
    return list(kinds.values())


def paper_tables(rows: list[dict[str, Any]], order: list[str]) -> list[dict[str, Any]]:
    """The paper's tables that apply to a run's summary rows (methods in the run's order): I, IV where videos have
    boxes, V, VI where AOSA ran in more than one variant, VII where AOSA-approx did."""
    ranked = sorted(rows, key=lambda row: (row["model"], order.index(row["method"]) if row["method"] in order else
                                           len(order), row["method"]))
    tables = []
    for title, measures, family in TABLES:
        chosen = [row for row in ranked if family in (None, row["method_name"])]
        applies = len({row["method"] for row in chosen}) > 1 if family else bool(chosen)
        if "spt" in measures and family is None:
            applies = applies and any(row["spt"] is not None for row in chosen)
        if applies:
            tables.append({"title": title, "measures": measures, "rows": chosen})
    return tables


TABLES = (
    ("Table I: deletion (lower is better), insertion and over-all (higher)", ("deletion", "insertion", "overall"),
     None),
    ("Table IV: spatial pointing game, S-PT per video (higher is better)", ("spt",), None),
    ("Table V: seconds per map (lower is better)", ("seconds",), None),
    ("Table VI: AOSA with single (top_k=0) and integrated masks", ("overall", "spt"), "aosa"),
    ("Table VII: AOSA-approx with and without conditional sampling and ReLU", ("deletion", "insertion", "spt"),
     "aosa-approx"),
)
