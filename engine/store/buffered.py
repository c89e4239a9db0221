"""Buffered unit writes on a background thread, so the evaluation's event loop never waits on file I/O.

`UnitWriter.add` hands a finished unit (checked rows and its maps) to one writer thread through a bounded
queue. The thread saves the unit's maps at once (they are the memory) and buffers its rows; it stores the
buffer (RunWriter.write_units: several units per file, metrics last) when it holds `max_units` units, when
its oldest unit waited `max_seconds`, and on `close`. A crash loses at most the buffered units, which a
resume computes again (their maps are overwritten). A failed write is raised by the next `add` or by `close`;
the units of that flush and every later one are not stored (a resume computes them).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable
from types import TracebackType

from aosa.engine.errors import StoreError
from aosa.engine.store.rows import UnitRows
from aosa.engine.store.writer import RunWriter

MAX_UNITS = 1000      # units per flush: rows of this many units at most wait in memory
MAX_SECONDS = 30.0    # and none waits longer than this
MAX_QUEUED = 64       # units (with their maps) handed over but not taken by the thread yet
STOP = object()


class UnitWriter:
    """`with UnitWriter(run_writer) as writer: writer.add(unit)`; leaving it stores the rest and raises a failure."""

    def __init__(self, store: RunWriter, max_units: int = MAX_UNITS, max_seconds: float = MAX_SECONDS,
                 max_queued: int = MAX_QUEUED) -> None:
        self.store, self.run_id, self.max_units, self.max_seconds = store, store.run_id, max_units, max_seconds
        self._jobs: queue.Queue[object] = queue.Queue(max_queued)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=f"aosa-writer-{self.run_id}", daemon=True)
        self._thread.start()

    def __enter__(self) -> UnitWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def add(self, unit: UnitRows) -> None:
        """Queue one unit; blocks only while `max_queued` units wait for the thread (bounded memory)."""
        self._raise()
        if not self._thread.is_alive():
            raise StoreError(f"the writer of run {self.run_id!r} in {self.store.root} is closed")
        self._jobs.put(unit)

    def close(self) -> None:
        """Store what is buffered and stop the thread; raises a failed flush."""
        if self._thread.is_alive():
            self._jobs.put(STOP)
            self._thread.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise StoreError(f"storing units of run {self.run_id!r} in {self.store.root} failed: "
                             f"{self._error}") from self._error

    def _loop(self) -> None:
        """The thread: save maps as units arrive, store the rows when due; after a failure store nothing more."""
        buffer: list[UnitRows] = []
        due = math.inf
        while True:
            try:
                job = self._jobs.get(timeout=None if due == math.inf else max(0.0, due - time.monotonic()))
            except queue.Empty:
                job = None  # the oldest buffered unit waited max_seconds
            if isinstance(job, UnitRows):
                self._guard(lambda unit=job: self.store.write_maps(unit))
                buffer.append(UnitRows(job.tables))  # the rows wait; the maps' memory goes
                due = min(due, time.monotonic() + self.max_seconds)
            if buffer and (not isinstance(job, UnitRows) or len(buffer) >= self.max_units):
                self._guard(lambda units=buffer: self.store.write_units(units))
                buffer, due = [], math.inf
            if job is STOP:
                return

    def _guard(self, write: Callable[[], object]) -> None:
        if self._error is None:
            try:
                write()
            except BaseException as exc:  # noqa: BLE001 - any failure is raised to the caller by add/close
                self._error = exc
