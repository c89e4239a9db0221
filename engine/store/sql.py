"""DuckDB mechanics of the result store: typed views over Parquet files, and a read-only sandbox for user SQL.

Views read exactly the files they are given, through pyarrow datasets: DuckDB's read_parquet expands every path
as a glob pattern (a store at `st[1]` would read `st1`), and its patterns cannot spell every path (a backslash
separates components there, so `a\\b[1]` cannot be escaped), so no store path ever reaches it.

The sandbox (DuckDB >= 1.2 for `allowed_directories`): after the views exist, the connection may read
only below the store root, cannot spill to disk, install or load extensions, and its configuration is
locked; `select_statements` admits SELECT statements only (no COPY, ATTACH, CREATE, INSERT, SET, ...).
DuckDB's memory limit bounds its buffer pool only: engine.store.query bounds a whole query's process.
"""

from __future__ import annotations

import pickle
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from aosa.engine.errors import AosaError, ConfigError

SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
              "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # DuckDB's: KB = 1000 bytes, KiB = 1024
FETCH_ROWS = 2_048  # rows turned into Python objects at a time, so a cap stops a large answer early


class QueryError(AosaError):
    """User SQL that is not allowed or fails; the message is DuckDB's first line."""

    kind = "query"


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def parquet_dataset(schema: pa.Schema, files: Sequence[Path]) -> ds.Dataset:
    """Exactly `files` (none is read as a glob pattern) as one dataset unioned by column name: `schema`'s
    columns as it types them (null where a file lacks one), then the columns only some files have."""
    extra = [pa.schema([field for field in _file_schema(path) if field.name not in schema.names]) for path in files]
    fields = [field.with_nullable(True) for field in schema]
    fields += pa.unify_schemas(extra, promote_options="permissive") if extra else []
    return ds.dataset([str(path) for path in files], schema=pa.schema(fields), format="parquet",
                      filesystem=pafs.LocalFileSystem())


def _file_schema(path: Path) -> pa.Schema:
    with path.open("rb") as file:
        return pq.read_schema(file)


def create_view(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, files: Sequence[Path]) -> None:
    """View `name` over exactly the Parquet `files` (none: an empty view), with every column of `schema`.

    Files are unioned by column name, so a column a file lacks reads as null; partition columns are
    stored inside the files, so directory names are never read as data.
    """
    con.register(name, parquet_dataset(schema, files))


def create_latest_view(con: duckdb.DuckDBPyConnection, name: str, events: str, key: str, order: str) -> None:
    """View `name`: the latest row (by `order`) of each `key` in the view `events`, every column kept."""
    con.execute(f'CREATE OR REPLACE VIEW "{name}" AS SELECT * FROM "{events}" '
                f'QUALIFY row_number() OVER (PARTITION BY "{key}" ORDER BY "{order}" DESC) = 1')


def size_bytes(text: str) -> int:
    """Bytes of a size in DuckDB's units: '2GB' (10^9 bytes), '512MiB' (2^29), '1.5 GB', '4096'."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([A-Za-z]*)\s*", text)
    if not match or match.group(2).lower() not in SIZE_UNITS:
        raise ConfigError(f"{text!r} is not a size such as 2GB, 512MB or 1GiB")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).lower()])


@dataclass(frozen=True)
class QueryLimits:
    """What one user query may use: wall seconds per statement, rows and bytes (pickled) returned per statement,
    memory (DuckDB's units; the whole query process, engine.store.query), and threads."""

    timeout: float | None = 300.0
    max_rows: int | None = 1_000_000
    max_bytes: int | None = 256 * 10**6
    memory: str = "2GB"
    threads: int = 2

    def memory_bytes(self) -> int:
        return size_bytes(self.memory)


SANDBOX = (
    "SET memory_limit={memory}",
    "SET threads={threads}",
    "SET temp_directory=''",                 # never spill to disk
    "SET allowed_directories=[{root}]",
    "SET enable_external_access=false",      # no other file, no network, no ATTACH, no extension install/load
    "SET autoinstall_known_extensions=false",
    "SET autoload_known_extensions=false",
    "SET lock_configuration=true",           # no SET/RESET can undo the above
)


def sandbox(con: duckdb.DuckDBPyConnection, root: Path, limits: QueryLimits = QueryLimits()) -> None:
    """Lock `con` to reading files below `root`, within `limits`' memory and threads (call after the views
    are created; the configuration is locked last, so a query cannot lift the caps)."""
    allowed = literal(str(root.resolve()).rstrip("/") + "/")
    memory = literal(f"{limits.memory_bytes()}B")
    try:
        for statement in SANDBOX:
            con.execute(statement.format(root=allowed, memory=memory, threads=int(limits.threads)))
    except duckdb.Error as exc:
        raise QueryError(f"DuckDB {duckdb.__version__} cannot sandbox queries (1.2 or newer needed): "
                         f"{first_line(exc)}") from None


def select_statements(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    """The statements of `sql`, each checked to be a SELECT (DESCRIBE, SHOW, SUMMARIZE, VALUES count too)."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None
    if not statements:
        raise QueryError("no SQL statement given")
    for statement in statements:
        if statement.type != duckdb.StatementType.SELECT:
            kind = statement.type.name.replace("_", " ")
            raise QueryError(f"only SELECT statements are allowed; got {kind}: {statement.query.strip()[:60]}")
    return [statement.query for statement in statements]


def run_select(con: duckdb.DuckDBPyConnection, sql: str, parameters: list[object] | dict[str, object] | None = None,
               limits: QueryLimits | None = None) -> tuple[list[str], list[tuple]]:
    """Column names and rows of one checked SELECT; a DuckDB failure, or a query past `limits`' timeout, row
    or byte cap or memory, becomes a one-line QueryError (the query is interrupted, not left running)."""
    timeout = limits.timeout if limits else None
    timer = threading.Timer(timeout, con.interrupt) if timeout else None
    try:
        if timer:
            timer.start()
        cursor = con.execute(sql, parameters)
        rows = fetch(cursor, limits) if limits else cursor.fetchall()
    except duckdb.InterruptException:
        raise timeout_error(timeout) from None
    except (duckdb.OutOfMemoryException, MemoryError) as exc:
        raise (memory_error(limits.memory) if limits else QueryError(first_line(exc))) from None
    except duckdb.PermissionException as exc:
        raise QueryError(f"{first_line(exc)} (queries may read only files inside the store)") from None
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None
    finally:
        if timer:
            timer.cancel()
    return [column[0] for column in cursor.description], rows


def fetch(cursor: duckdb.DuckDBPyConnection, limits: QueryLimits) -> list[tuple]:
    """Every row of `cursor`, converted FETCH_ROWS at a time; more rows or bytes (as pickled) than `limits`
    allow is a QueryError as soon as a chunk passes the cap, not a truncated answer."""
    rows: list[tuple] = []
    size = 0
    while chunk := cursor.fetchmany(FETCH_ROWS):
        rows += chunk
        size += len(pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL))
        if limits.max_rows is not None and len(rows) > limits.max_rows:
            raise QueryError(f"the query returns more than {limits.max_rows} rows; add a LIMIT or raise --max-rows")
        if limits.max_bytes is not None and size > limits.max_bytes:
            raise QueryError(f"the query returns more than {limits.max_bytes / 1e6:g} MB; add a LIMIT, select "
                             "fewer columns or raise --max-bytes")
    return rows


def timeout_error(timeout: float | None) -> QueryError:
    return QueryError(f"the query ran past its {timeout:g} s timeout and was stopped (--timeout)")


def memory_error(memory: str) -> QueryError:
    return QueryError(f"the query needed more than --memory-limit {memory} and was stopped")


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
