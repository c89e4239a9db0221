"""The Runs page: one line per run of the store, newest first, from its status rows and its units."""

from __future__ import annotations

from typing import Any

import duckdb

from aosa.engine.store.sql import run_select

FINAL = ("finished", "failed", "interrupted", "passed")  # a run in another state ("running") has no end yet

RUNS_SQL = f"""
WITH events AS (
    SELECT run_id, min(created_at) AS started, max(created_at) AS last_event,
           arg_max(status, created_at) AS status, arg_max(device, created_at) AS device,
           arg_max(host, created_at) AS host
    FROM run_events GROUP BY run_id),
units AS (
    SELECT run_id, string_agg(DISTINCT model, ', ' ORDER BY model) AS models,
           list(DISTINCT method ORDER BY method) AS methods,
           count(*) FILTER (WHERE status = 'ok') AS ok, count(*) FILTER (WHERE status <> 'ok') AS failed,
           string_agg(DISTINCT decoder, ', ' ORDER BY decoder) AS decoders,
           min(created_at) AS first_unit, max(created_at) AS last_unit
    FROM metrics GROUP BY run_id)
SELECT run_id, coalesce(status, 'no status row') AS status, models, methods, coalesce(ok, 0) AS ok,
       coalesce(failed, 0) AS failed, decoders, device, host, least(started, first_unit) AS started,
       CASE WHEN status IN {FINAL} THEN greatest(last_event, last_unit) END AS ended
FROM events FULL OUTER JOIN units USING (run_id)
ORDER BY started DESC NULLS LAST, run_id
"""


def list_runs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every run: state, models, methods, units ok and failed, decoders, device, host, start and end."""
    columns, rows = run_select(con, RUNS_SQL)
    return [dict(zip(columns, row)) for row in rows]


def has_run(con: duckdb.DuckDBPyConnection, run_id: str) -> bool:
    """Whether the store holds any row of `run_id`."""
    sql = "SELECT EXISTS (SELECT 1 FROM run_events WHERE run_id = $run UNION ALL " \
          "SELECT 1 FROM metrics WHERE run_id = $run)"
    return bool(run_select(con, sql, {"run": run_id})[1][0][0])
