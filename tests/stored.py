"""What tests read back from a result store and write into one, through the store's public reader and writer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from aosa.engine.store.reader import StoreReader
from aosa.engine.store.rows import MapFile, unit_rows
from aosa.engine.store.writer import RunWriter

Rows = Sequence[Mapping[str, Any]]


def stored_table(store: Path, name: str, run_id: str | None = None) -> pa.Table:
    """Every row of one view of the store (of one run), as DuckDB reads it."""
    with StoreReader(store).connect(run_id) as con:
        return con.sql(f'SELECT * FROM "{name}"').to_arrow_table()


def stored_rows(store: Path, name: str, run_id: str | None = None) -> list[dict[str, Any]]:
    """Every row of one view of the store (of one run), as dicts."""
    return stored_table(store, name, run_id).to_pylist()


def write_unit(writer: RunWriter, metrics: Rows, timings: Rows = (), maps: Rows = (),
               files: Sequence[MapFile] = ()) -> None:
    """Store one unit's rows (and map files) at once, as the evaluation's recorder does outside `buffered`."""
    writer.write_units([unit_rows(writer.run_id, metrics, timings, maps, files)])
