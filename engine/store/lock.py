"""One writer per run: a lock file in the store names the process that holds a run id.

A second writer is refused with a line naming the holder (host and pid). A lock whose process is gone
(same host, pid no longer running) is taken over; a lock held from another host cannot be checked from
here, so it is refused with the path to delete once that writer is known to be dead.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import psutil

from aosa.engine.errors import ConfigError

LOCKS = "locks"  # folder of the store that holds the run locks


class RunLock:
    """`with RunLock(root, run_id):` holds the run for this process; released on exit, even after errors."""

    def __init__(self, root: Path, run_id: str, file_name: str) -> None:
        self.run_id = run_id
        self.path = root / LOCKS / f"{file_name}.lock"
        self.holder = {"host": platform.node(), "pid": os.getpid(),
                       "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while not self._create():
            current = self._read()
            if current is not None and not self._dead(current):
                raise ConfigError(f"run {self.run_id!r} is being written by pid {current.get('pid')} on "
                                  f"{current.get('host')} since {current.get('since')}; wait for it, or delete "
                                  f"{self.path} if that process is gone")
            self.path.unlink(missing_ok=True)  # a dead holder's lock (or an unreadable one): take it over
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._read() == self.holder:
            self.path.unlink(missing_ok=True)

    def _create(self) -> bool:
        """Write the lock file only if none exists (atomic on a local or NFSv3+ file system)."""
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump(self.holder, handle)
        return True

    def _read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    @staticmethod
    def _dead(holder: dict) -> bool:
        """Whether the holder is known to be gone: same host, and its pid no longer runs or now belongs to a
        process started after the lock was taken (the pid was reused)."""
        if holder.get("host") != platform.node():
            return False
        try:
            started = psutil.Process(int(holder["pid"])).create_time()
            taken = datetime.fromisoformat(holder["since"]).timestamp()
        except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
            return True
        return started > taken + 1  # the lock's time has whole seconds
