"""DuckDB mechanics of the result store: typed views over Parquet globs, and a read-only sandbox for user SQL.

The sandbox (DuckDB >= 1.2 for `allowed_directories`): after the views exist, the connection may read
only below the store root, cannot spill to disk, install or load extensions, and its configuration is
locked; `select_statements` admits SELECT statements only (no COPY, ATTACH, CREATE, INSERT, SET, ...).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa

from engine.errors import AosaError


class QueryError(AosaError):
    """User SQL that is not allowed or fails; the message is DuckDB's first line."""

    kind = "query"


def literal(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def create_view(con: duckdb.DuckDBPyConnection, name: str, schema: pa.Schema, glob: str | None) -> None:
    """View `name` with at least `schema`'s columns, over the Parquet files matching `glob` (None: empty).

    Files are unioned by column name, so a column a file lacks reads as null; partition columns are
    stored inside the files, so hive partitioning is off (directory names are quoted, not data).
    """
    empty = con.from_arrow(schema.empty_table())
    typed = ", ".join(f'CAST(NULL AS {type_}) AS "{column}"' for column, type_ in zip(empty.columns, empty.dtypes))
    query = f"SELECT {typed} WHERE false"
    if glob is not None:
        query += (f" UNION ALL BY NAME SELECT * FROM read_parquet({literal(glob)}, union_by_name=true,"
                  " hive_partitioning=false)")
    con.execute(f'CREATE OR REPLACE VIEW "{name}" AS {query}')


SANDBOX = (
    "SET temp_directory=''",                 # never spill to disk
    "SET allowed_directories=[{root}]",
    "SET enable_external_access=false",      # no other file, no network, no ATTACH, no extension install/load
    "SET autoinstall_known_extensions=false",
    "SET autoload_known_extensions=false",
    "SET lock_configuration=true",           # no SET/RESET can undo the above
)


def sandbox(con: duckdb.DuckDBPyConnection, root: Path) -> None:
    """Lock `con` to reading files below `root` (call after the views are created)."""
    allowed = literal(str(root.resolve()).rstrip("/") + "/")
    try:
        for statement in SANDBOX:
            con.execute(statement.format(root=allowed))
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


def run_select(con: duckdb.DuckDBPyConnection, sql: str,
               parameters: list[object] | None = None) -> tuple[list[str], list[tuple]]:
    """Column names and rows of one checked SELECT; a DuckDB failure becomes a one-line QueryError."""
    try:
        cursor = con.execute(sql, parameters)
        return [column[0] for column in cursor.description], cursor.fetchall()
    except duckdb.PermissionException as exc:
        raise QueryError(f"{first_line(exc)} (queries may read only files inside the store)") from None
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
