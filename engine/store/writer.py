"""The one writer of a run: it holds the run's lock (engine.store.lock) and writes the run's rows and maps.

Units are stored in groups (one group per method of one `write_units` call): the group's timings and maps
files come first and its metrics file, of the same name, last; a unit counts as stored once its metrics rows
land, and `maintenance.discard_unfinished` removes the timings and maps of a group whose metrics never
landed, so a resumed run stores nothing twice. Every file is written atomically (paths.write_atomic).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from aosa.engine.errors import ConfigError, StoreError
from aosa.engine.store.lock import RunLock
from aosa.engine.store.paths import loose_name, partition, write_atomic
from aosa.engine.store.rows import UnitRows, checked_table

UNIT_TABLES = ("timings", "maps", "metrics")  # a group's files in the order they are written: metrics last


class RunWriter:
    """`with RunWriter(root, run_id) as writer:` holds the run (a second writer of it is refused at once) and
    writes its `runs` rows, units and maps; nothing is written outside the `with`."""

    def __init__(self, root: Path | str, run_id: str) -> None:
        if not run_id:
            raise ConfigError("a run id must not be empty")
        self.root, self.run_id = Path(root).resolve(), run_id
        self.partition = partition("run_id", run_id)
        self.lock = RunLock(self.root, run_id, self.partition)
        self._held = False

    def __enter__(self) -> RunWriter:
        self.lock.__enter__()
        self._held = True
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._held = False
        self.lock.__exit__(kind, exc, tb)

    def folder(self, name: str) -> Path:
        """The run's partition folder of table `name`; only its holder may touch it."""
        if not self._held:
            raise StoreError(f"run {self.run_id!r} of {self.root} is written without holding its lock")
        return self.root / name / self.partition

    def write_run(self, run_row: Mapping[str, Any]) -> None:
        """Append one `runs` row (a new row per status change; the latest `created_at` is current)."""
        self._write_parquet("runs", [], uuid.uuid4().hex, checked_table("runs", self.run_id, [run_row]))

    def write_units(self, units: Sequence[UnitRows]) -> None:
        """Store finished units, several per file: their maps, then per method one group of files sharing
        a name, timings and maps first and metrics last (the group counts as stored once metrics lands)."""
        for unit in units:
            self.write_maps(unit)
        tables = {name: pa.concat_tables([unit.tables[name] for unit in units]) for name in UNIT_TABLES}
        for method in sorted(set(tables["metrics"].column("method").to_pylist())):
            group = uuid.uuid4().hex
            for name in UNIT_TABLES:
                rows = tables[name].filter(pc.equal(tables[name].column("method"), method))
                if rows.num_rows:
                    partitions = [partition("method", method)] if name == "metrics" else []
                    self._write_parquet(name, partitions, group, rows)

    def write_maps(self, unit: UnitRows) -> None:
        """Write a unit's map files and preview; a file left by a unit that never got stored is overwritten on
        resume."""
        self.folder("maps")
        for map_file in unit.maps:
            write_atomic(self.root / map_file.path, lambda file, values=map_file.values: np.save(file, values))
        for preview in unit.previews:
            write_atomic(self.root / preview.path, lambda file, data=preview.data: file.write(data))

    def _write_parquet(self, name: str, partitions: list[str], group: str, table: pa.Table) -> None:
        path = self.folder(name) / Path(*partitions) / loose_name(group)
        write_atomic(path, lambda file: pq.write_table(table, file))
