"""Query answers as text: an aligned table, CSV or JSON (`aosa query`, `aosa report`).

Kept apart from the jobs' command-line plumbing (which imports torch), since a query's child process renders
its answer within the query's memory limit (engine.store.query).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

FORMATS = ("table", "csv", "json")
MAX_CELL = 60  # characters of one cell in the aligned table


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
