"""`aosa query --store DIR "SELECT ..."`: read-only SQL over the result store's views.

Views: runs (one row per run, its latest state), run_events (every status row), metrics, timings, maps
(schemas/tables.py). Only SELECT statements run (DESCRIBE, SHOW and SUMMARIZE too), on a DuckDB connection
that can read nothing outside the store and write nothing, in a child process bounded in memory, time and
answer size (engine.store.query); the answer is rendered there too.

    python -m aosa.jobs.query --store results "SELECT method, avg(overall) FROM metrics GROUP BY method"
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from aosa.engine.errors import ConfigError
from aosa.engine.store.query import run_query
from aosa.engine.store.sql import QueryLimits, size_bytes
from aosa.jobs.common import open_store, run_guarded
from aosa.jobs.render import FORMATS, render


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa query", description="Read-only SQL over a result store.")
    parser.add_argument("sql", help="one or more SELECT statements over runs, run_events, metrics, timings, maps")
    add_store_options(parser)
    add_limit_options(parser)
    return parser


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """What one query may use (--timeout, --max-rows, --max-bytes, --memory-limit, --threads), shared with the
    SQL box of `aosa serve`."""
    defaults = QueryLimits()
    limits = parser.add_argument_group("limits (a query past one is stopped with one error line)")
    limits.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds per statement")
    limits.add_argument("--max-rows", type=int, default=defaults.max_rows, help="rows a statement may return")
    limits.add_argument("--max-bytes", default=f"{defaults.max_bytes // 10**6}MB",
                        help="bytes a statement may return (as pickled), e.g. 256MB")
    limits.add_argument("--memory-limit", default=defaults.memory,
                        help="memory of the whole query (its process: DuckDB, the answer and its rendering), e.g. 2GB")
    limits.add_argument("--threads", type=int, default=defaults.threads, help="DuckDB and Arrow threads")


def query_limits(args: argparse.Namespace) -> QueryLimits:
    if args.timeout <= 0 or args.max_rows < 1 or args.threads < 1:
        raise ConfigError("--timeout must be positive, --max-rows and --threads at least 1")
    max_bytes, memory = size_bytes(args.max_bytes), size_bytes(args.memory_limit)
    if max_bytes < 1 or memory < 1:
        raise ConfigError("--max-bytes and --memory-limit must be positive")
    return QueryLimits(timeout=args.timeout, max_rows=args.max_rows, max_bytes=max_bytes, memory=args.memory_limit,
                       threads=args.threads)


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """--store and --format, shared with `aosa report`."""
    parser.add_argument("--store", type=Path, required=True, help="result store directory")
    parser.add_argument("--format", choices=FORMATS, default="table", help="output format")


def run(args: argparse.Namespace) -> int:
    limits = query_limits(args)
    answers = run_query(open_store(args.store), args.sql, limits, partial(render, fmt=args.format))
    print("\n\n".join(answers))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("query", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
