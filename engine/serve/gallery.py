"""The Videos page's query: one row per (model, video) of a run, sorted and filtered by DuckDB, a page at a time.

Sort by video id, by any metric of any method, or by the disagreement |A - B| of that metric between two methods;
filter by status, error kind, class (the explained target, else the label), model, a metric's range for a method,
a least disagreement, and the pointing split: the pointing game hits most frames (S-PT >= 0.5) for exactly one of
A and B. Metric names are checked against the `metrics` view's numeric columns and methods are parameters, so no
request text becomes SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import duckdb

from aosa.engine.errors import ConfigError
from aosa.engine.store.sql import run_select

PAGE_SIZE = 24
SPT = "spt_hits::DOUBLE / nullif(spt_frames, 0)"
FLOATS = ("DOUBLE", "FLOAT", "REAL", "DECIMAL")
SORTS = ("video", "metric", "gap")
STATUSES = ("any", "ok", "partial", "error")


def metric_columns(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Every per-map measure a gallery can sort or filter by, name -> SQL expression, read off the `metrics` view
    (so newer measures join by themselves): its floating-point columns, `n_forward`, booleans as 0 or 1, and for
    each `X_hits` beside an `X_frames` their ratio `X` (`spt`: the share of a clip's frames the pointing game hits)."""
    _, rows = run_select(con, "SELECT column_name, column_type FROM (DESCRIBE metrics)")
    kinds = {name: kind.split("(")[0] for name, kind in rows}
    found = {"overall": '"overall"'}
    for name, kind in kinds.items():
        base = name.removesuffix("_hits")
        if base != name and f"{base}_frames" in kinds:
            found[base] = f'"{name}"::DOUBLE / nullif("{base}_frames", 0)'
        elif kind in FLOATS or name == "n_forward":
            found[name] = f'"{name}"'
        elif kind == "BOOLEAN":
            found[name] = f'"{name}"::INTEGER'
    return found


@dataclass(frozen=True)
class GalleryQuery:
    """A Videos page request; every field is a query parameter of the page's URL."""

    sort: str = "video"
    metric: str = "overall"
    method: str = ""
    order: str = "desc"
    status: str = "any"
    kind: str = ""
    klass: str = ""
    model: str = ""
    fmetric: str = "overall"
    fmethod: str = ""
    low: str = ""
    high: str = ""
    a: str = ""
    b: str = ""
    gap: str = ""
    split: str = ""
    page: int = 1

    @classmethod
    def of(cls, params: dict[str, str]) -> GalleryQuery:
        """The query from request parameters (unknown ones ignored); a page that is not a number is page 1."""
        given = {field.name: params[field.name] for field in fields(cls) if params.get(field.name)}
        page = given.pop("page", "1")
        return cls(**given, page=max(1, int(page)) if page.isdigit() else 1)

    def params(self, **changes: Any) -> dict[str, Any]:
        """The non-default fields as URL parameters, with `changes` applied (e.g. page=2)."""
        default = GalleryQuery()
        values = {field.name: getattr(self, field.name) for field in fields(self)} | changes
        return {name: value for name, value in values.items() if value != getattr(default, name)}


def _number(text: str, what: str) -> float | None:
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{what} must be a number, got {text!r}") from None


def _checked(query: GalleryQuery, metrics: dict[str, str]) -> None:
    for name in (query.metric, query.fmetric):
        if name not in metrics:
            raise ConfigError(f"unknown metric {name!r}; metrics: {', '.join(metrics)}")
    if query.sort not in SORTS or query.order not in ("asc", "desc") or query.status not in STATUSES:
        raise ConfigError(f"sort must be one of {', '.join(SORTS)}, order asc or desc, status one of "
                          f"{', '.join(STATUSES)}")
    if query.klass and not query.klass.lstrip("-").isdigit():
        raise ConfigError(f"class must be a class index, got {query.klass!r}")


def _conditions(query: GalleryQuery) -> tuple[list[str], dict[str, Any]]:
    """SQL conditions on the per-video rows and their parameters, for the filters the query sets."""
    conditions, values = [], {}
    wanted = {"status": ("status = $status", query.status if query.status != "any" else ""),
              "kind": ("list_contains(kinds, $kind)", query.kind), "model": ("model = $model", query.model),
              "klass": ("class = $klass", int(query.klass) if query.klass else ""),
              "low": ("filter_value >= $low", _number(query.low, "the lower bound")),
              "high": ("filter_value <= $high", _number(query.high, "the upper bound")),
              "gap": ("abs(a_value - b_value) >= $gap", _number(query.gap, "the least disagreement"))}
    for name, (condition, value) in wanted.items():
        if value not in ("", None):
            conditions.append(condition)
            values[name] = value
    if query.split:
        conditions.append("(a_spt >= 0.5) <> (b_spt >= 0.5)")
    return conditions, values


def gallery_sql(query: GalleryQuery, metrics: dict[str, str]) -> tuple[str, dict[str, Any]]:
    """The page's SQL and parameters ($run and $thumb, the method whose map a thumbnail shows, left to set): per-video
    rows, filtered, sorted (ties by model and video), one page."""
    _checked(query, metrics)
    conditions, values = _conditions(query)
    order = {"video": "model, video_id", "metric": f"sort_value {query.order} NULLS LAST, model, video_id",
             "gap": f"abs(a_value - b_value) {query.order} NULLS LAST, model, video_id"}[query.sort]
    sql = f"""
WITH units AS (
    SELECT model, video_id, method, status, error_kind, coalesce(target, label) AS class,
           {metrics[query.metric]} AS sort_metric, {metrics[query.fmetric]} AS filter_metric, {SPT} AS spt
    FROM metrics WHERE run_id = $run),
videos AS (
    SELECT model, video_id, any_value(class) AS class,
           CASE WHEN bool_and(status = 'ok') THEN 'ok' WHEN bool_or(status = 'ok') THEN 'partial' ELSE 'error' END
               AS status,
           list(DISTINCT error_kind) FILTER (WHERE error_kind IS NOT NULL) AS kinds,
           max(sort_metric) FILTER (WHERE method = $method) AS sort_value,
           max(filter_metric) FILTER (WHERE method = $fmethod) AS filter_value,
           max(sort_metric) FILTER (WHERE method = $a) AS a_value,
           max(sort_metric) FILTER (WHERE method = $b) AS b_value,
           max(spt) FILTER (WHERE method = $a) AS a_spt, max(spt) FILTER (WHERE method = $b) AS b_spt,
           bool_or(method = $thumb AND status = 'ok') AS has_thumb
    FROM units GROUP BY model, video_id)
SELECT *, abs(a_value - b_value) AS gap_value, count(*) OVER () AS total FROM videos
{"WHERE " + " AND ".join(conditions) if conditions else ""}
ORDER BY {order} LIMIT {PAGE_SIZE} OFFSET $offset
"""
    return sql, {**values, "method": query.method, "fmethod": query.fmethod or query.method,
                 "a": query.a, "b": query.b, "offset": (query.page - 1) * PAGE_SIZE}


def gallery_page(con: duckdb.DuckDBPyConnection, run_id: str, query: GalleryQuery,
                 thumb: str) -> tuple[list[dict[str, Any]], int]:
    """The page's per-video rows (`has_thumb`: whether the video has a map of `thumb`) and how many videos pass
    the filters."""
    sql, values = gallery_sql(query, metric_columns(con))
    columns, rows = run_select(con, sql, {**values, "run": run_id, "thumb": thumb})
    records = [dict(zip(columns, row)) for row in rows]
    return records, records[0]["total"] if records else 0
