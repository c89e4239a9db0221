"""User SQL over the result store, run in a child process bounded in memory, time and answer size.

DuckDB's memory_limit bounds its buffer pool only, not list intermediates nor the answer's conversion to
Python, so `run_query` runs the statements in a child (`python -m aosa.engine.store.query FD`). The child
opens the store's sandboxed views (engine.store.sql.sandbox), then caps its data segment (RLIMIT_DATA) at what
it holds by then plus the memory limit: past it an allocation fails, which DuckDB and Python report as out of
memory, or the child dies, which the parent reports the same way. RLIMIT_DATA counts every heap and anonymous
mapping; RLIMIT_AS bounds as well but also counts what thread pools reserve and never touch (about 300 MB once
pyarrow's start). Each statement's rows are capped in number and bytes, and the parent kills a child that
runs past a statement's timeout (DuckDB's interrupt cannot stop the conversion to Python).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

import duckdb
import pyarrow as pa

from aosa.engine.errors import AosaError
from aosa.engine.store.sql import (QueryError, QueryLimits, first_line, memory_error, run_select, select_statements,
                                  timeout_error)

Render = Callable[[list[str], list[tuple]], Any]
Connection = multiprocessing.connection.Connection
START_SECONDS = 60.0  # the child's start (imports, the store's file list) comes on top of the first timeout
GRACE_SECONDS = 5.0   # past a timeout, the child's own interrupt of DuckDB has this long to report it
# pyarrow's default pool, mimalloc, reserves a 1 GiB arena when pyarrow.dataset loads: counted in the child's
# baseline, it would let Arrow's allocations pass the cap unseen; malloc's grow the data segment as they are used
CHILD_ENV = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": "system"}


class Store(Protocol):
    """A store reader (picklable: the child opens it again) with sandboxed views (engine.store.sql.sandbox)."""

    def connect(self, run_id: str | None = None, read_only: bool = False,
                limits: QueryLimits = QueryLimits()) -> duckdb.DuckDBPyConnection: ...


def run_query(store: Store, sql: str, limits: QueryLimits = QueryLimits(), render: Render | None = None) -> list[Any]:
    """Each SELECT statement of `sql` over `store`'s views, run in a child process within `limits`: its
    (column names, rows), or what the picklable `render(columns, rows)` makes of them in the child, so that
    rendering counts against the memory limit too. Anything refused, failed or past a limit: QueryError."""
    ours, theirs = multiprocessing.Pipe()
    with tempfile.TemporaryFile() as errors:
        child = subprocess.Popen([sys.executable, "-m", __name__, str(theirs.fileno())], pass_fds=[theirs.fileno()],
                                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors, env=CHILD_ENV)
        theirs.close()
        try:
            with contextlib.suppress(OSError):  # a child that died at once is reported by `answers`
                ours.send((store, sql, limits, render))
            return answers(ours, child, limits, errors)
        finally:
            child.kill()
            child.wait()
            ours.close()


def answers(connection: Connection, child: subprocess.Popen, limits: QueryLimits, errors: IO[bytes]) -> list[Any]:
    """The child's answer; it reports the start of each statement, and each gets its own deadline."""
    started, wait = False, START_SECONDS + limits.timeout if limits.timeout else None
    while True:
        if not connection.poll(wait):
            raise timeout_error(limits.timeout)
        try:
            kind, value = connection.recv()
        except EOFError:
            raise QueryError(death(child.wait(), started, limits, errors)) from None
        if kind == "error":
            raise QueryError(value)
        if kind == "answer":
            return value
        started, wait = True, limits.timeout + GRACE_SECONDS if limits.timeout else None


def death(code: int, started: bool, limits: QueryLimits, errors: IO[bytes]) -> str:
    """Why a child ended without an answer: it could not start (its last line of stderr), or, once its memory
    was capped, it ran out of memory where no error could be raised."""
    if not started:
        errors.seek(0)
        lines = errors.read().decode(errors="replace").strip().splitlines() or [f"exit status {code}"]
        return f"the query process did not start: {lines[-1]}"
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    return f"{memory_error(limits.memory)} (its process ended with {how})"


def serve(fd: int) -> None:
    """The child: answer the one request on the connection `fd` with ("answer", results) or ("error", line)."""
    with Connection(fd) as connection:
        store, sql, limits, render = connection.recv()
        try:
            connection.send(("answer", answer(connection, store, sql, limits, render)))
        except AosaError as exc:
            connection.send(("error", str(exc)))
        except MemoryError:
            connection.send(("error", str(memory_error(limits.memory))))
        except Exception as exc:  # noqa: BLE001 - any failure crosses to the parent as one line
            connection.send(("error", f"{type(exc).__name__}: {first_line(exc)}"))


def answer(connection: Connection, store: Store, sql: str, limits: QueryLimits, render: Render | None) -> list[Any]:
    """Every statement's result, each announced to the parent as it starts; memory capped once the views exist."""
    pa.set_cpu_count(limits.threads)
    pa.set_io_thread_count(limits.threads)
    results = []
    with store.connect(read_only=True, limits=limits) as con:
        statements = select_statements(con, sql)
        cap_memory(limits.memory_bytes())
        for index, statement in enumerate(statements):
            connection.send(("statement", index))
            columns, rows = run_select(con, statement, limits=limits)
            results.append(render(columns, rows) if render else (columns, rows))
    return results


def cap_memory(limit: int) -> None:
    """Cap this process's data segment at what it holds now plus `limit` bytes (Linux's /proc/self/status)."""
    held = re.search(r"^VmData:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    if held is None:
        raise QueryError("bounding a query's memory needs Linux (/proc/self/status)")
    cap = int(held.group(1)) * 1024 + limit
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = cap if hard == resource.RLIM_INFINITY else min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
