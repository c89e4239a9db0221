"""One writer per run: a lock file in the store names the process that holds a run id.

A lock is created whole: its holder (host, pid, start time, a random token) is written to a temp file that is
then linked into place, and `os.link` fails where a lock exists, so a lock is never seen empty or half written
and of two writers exactly one creates it. A second writer is refused with a line naming the holder.

A lock whose holder is gone (same host, its pid no longer running, or running a process started after the
lock) is taken over without ever removing a live writer's lock. The taker first takes the stale lock's claim,
a lock file named after the stale lock's contents, so one process at a time takes over one stale lock; then it
checks that the lock still holds what it judged dead, removes it and creates its own. No one else removes or
replaces that stale lock while the claim is held, so the check still holds when the lock is removed. A claim
left by a dead claimer is taken over the same way. A lock held from another host cannot be checked from here:
it is refused with the path to delete once that writer is known to be dead.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import uuid
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import psutil

from aosa.engine.errors import ConfigError

LOCKS = "locks"  # folder of the store that holds the run locks


class RunLock:
    """`with RunLock(root, run_id, file_name):` holds the run for this process; released on exit, even after errors."""

    def __init__(self, root: Path, run_id: str, file_name: str) -> None:
        self.run_id = run_id
        self.path = root / LOCKS / f"{file_name}.lock"
        self.content = json.dumps({"host": platform.node(), "pid": os.getpid(),
                                   "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                   "token": uuid.uuid4().hex}).encode()

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        take(self.path, self.content, self.run_id)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if read(self.path) == self.content:  # no one but its holder removes a live lock
            self.path.unlink(missing_ok=True)


def take(path: Path, content: bytes, run_id: str) -> None:
    """Create the lock file `path` holding `content`, taking over a dead holder's; a live holder is refused."""
    while not create(path, content):
        found = read(path)
        if found is None:
            continue  # released meanwhile
        host, pid, since = holder(found, path, run_id)
        if not dead(host, pid, since):
            raise ConfigError(f"run {run_id!r} is being written by pid {pid} on {host} since {since}; wait for it, "
                              f"or delete {path} if that process is gone")
        remove_stale(path, found, content, run_id)


def create(path: Path, content: bytes) -> bool:
    """Write `content` aside, then link it to `path`; False (nothing changed) when `path` exists."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temp, "wb") as file:
            file.write(content)
            file.flush()
            os.fsync(file.fileno())
        os.link(temp, path)
        return True
    except FileExistsError:
        return False
    finally:
        temp.unlink(missing_ok=True)


def remove_stale(path: Path, found: bytes, content: bytes, run_id: str) -> None:
    """Remove the lock file `path` if it still holds `found`, while holding the claim on `found`."""
    claim = claim_path(path, found)
    take(claim, content, run_id)
    try:
        if read(path) == found:
            path.unlink()
    finally:
        claim.unlink()


def claim_path(path: Path, found: bytes) -> Path:
    """The claim file of the lock file `path` holding `found`: one name per stale lock, beside it."""
    return path.with_name(f".{hashlib.sha256(path.name.encode() + found).hexdigest()[:24]}.claim")


def read(path: Path) -> bytes | None:
    """A lock file's contents; None when there is none."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def holder(found: bytes, path: Path, run_id: str) -> tuple[str, int, str]:
    """Host, pid and start time (ISO 8601) a lock file names; a file that names none is refused, not taken over."""
    try:
        data = json.loads(found)
        host, pid, since = str(data["host"]), int(data["pid"]), str(data["since"])
        datetime.fromisoformat(since)
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"run {run_id!r} has an unreadable lock file {path}; delete it if no process writes "
                          "the run") from None
    return host, pid, since


def dead(host: str, pid: int, since: str) -> bool:
    """Whether a lock's holder is known to be gone: same host, and its pid no longer runs or now belongs to a
    process started after the lock was taken (the pid was reused)."""
    if host != platform.node():
        return False
    try:
        started = psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, ValueError):
        return True
    return started > datetime.fromisoformat(since).timestamp() + 1  # the lock's time has whole seconds
