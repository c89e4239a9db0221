"""`aosa query --store DIR "SELECT ..."`: read-only SQL over the result store's views.

Views: runs (one row per run, its latest state), run_events (every status row), metrics, timings, maps
(schemas/tables.py). Only SELECT statements run (DESCRIBE, SHOW and
SUMMARIZE too), on a DuckDB connection that can read nothing outside the store and write nothing.

    python -m aosa.jobs.query --store results "SELECT method, avg(overall) FROM metrics GROUP BY method"
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from aosa.engine.errors import ConfigError
from aosa.engine.store.results import ResultStore
from aosa.engine.store.sql import QueryLimits, run_select, select_statements
from aosa.jobs.common import run_guarded

FORMATS = ("table", "csv", "json")
MAX_CELL = 60  # characters of one cell in the aligned table


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa query", description="Read-only SQL over a result store.")
    parser.add_argument("sql", help="one or more SELECT statements over runs, run_events, metrics, timings, maps")
    add_store_options(parser)
    defaults = QueryLimits()
    limits = parser.add_argument_group("limits (a query past one is stopped with one error line)")
    limits.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds per statement")
    limits.add_argument("--max-rows", type=int, default=defaults.max_rows, help="rows a statement may return")
    limits.add_argument("--memory-limit", default=defaults.memory, help="DuckDB memory cap, e.g. 2GB")
    limits.add_argument("--threads", type=int, default=defaults.threads, help="DuckDB threads")
    return parser


def query_limits(args: argparse.Namespace) -> QueryLimits:
    if args.timeout <= 0 or args.max_rows < 1 or args.threads < 1:
        raise ConfigError("--timeout must be positive, --max-rows and --threads at least 1")
    return QueryLimits(timeout=args.timeout, max_rows=args.max_rows, memory=args.memory_limit, threads=args.threads)


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """--store and --format, shared with `aosa report`."""
    parser.add_argument("--store", type=Path, required=True, help="result store directory")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")


def open_store(path: Path) -> ResultStore:
    """The store at `path`, which must be an existing directory."""
    if not path.is_dir():
        raise ConfigError(f"store {path} is not a directory")
    return ResultStore(path)


def jsonable(value: Any) -> Any:
    """`value` as JSON data: timestamps ISO 8601, non-finite floats null, bytes hex, nested lists kept."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """Rows as an aligned table, CSV (lists as JSON) or a JSON list of objects (one per line)."""
    if fmt == "json":
        objects = [json.dumps(dict(zip(columns, jsonable(list(row))))) for row in rows]
        return "[\n" + ",\n".join(objects) + "\n]" if objects else "[]"
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([_csv_cell(value) for value in row] for row in rows)
        return buffer.getvalue().rstrip("\n")
    return aligned([list(columns)], [[_table_cell(value) for value in row] for row in rows])


def aligned(header: list[list[str]], body: list[list[str]]) -> str:
    """Text columns padded to one width each, a rule under the header lines; numbers align right."""
    lines = header + body
    widths = [max((len(line[i]) for line in lines), default=0) for i in range(len(header[0]))]

    def fmt(line: list[str]) -> str:
        return "  ".join(cell.rjust(w) if _numeric(cell) else cell.ljust(w) for cell, w in zip(line, widths)).rstrip()

    return "\n".join([*map(fmt, header), "  ".join("-" * w for w in widths), *map(fmt, body)])


def _numeric(cell: str) -> bool:
    return cell.replace(".", "", 1).replace("-", "", 1).replace("e", "", 1).isdigit()


def _csv_cell(value: Any) -> Any:
    data = jsonable(value)
    return json.dumps(data) if isinstance(data, (list, dict)) else ("" if data is None else data)


def _table_cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, tuple)):
        text = "[" + ", ".join(_table_cell(item) for item in value) + "]"
    else:
        text = str(value)
    return text if len(text) <= MAX_CELL else text[:MAX_CELL - 3] + "..."


def run(args: argparse.Namespace) -> int:
    store, limits = open_store(args.store), query_limits(args)
    with store.connect(read_only=True, limits=limits) as con:
        results = [run_select(con, statement, limits=limits) for statement in select_statements(con, args.sql)]
    print("\n\n".join(render(columns, rows, args.format) for columns, rows in results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("query", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
