"""Running servers announce themselves, as Jupyter's runtime files do: one JSON file per server (its store, its
address, its pid) in the runtime folder ($AOSA_RUNTIME_DIR, else ~/.cache/aosa/servers), removed when it stops.
The nightly report links each of its clips into a live server of its store and stays self-contained otherwise."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from aosa.engine.store.paths import write_atomic

HEALTH_SECONDS = 1.0  # a server that does not answer its health check this fast is not linked to


def runtime_dir() -> Path:
    return Path(os.environ.get("AOSA_RUNTIME_DIR") or Path.home() / ".cache" / "aosa" / "servers")


def store_key(root: Path) -> str:
    """What a server's health check says of its store: a digest of its path, not the path itself."""
    return hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:16]


@contextlib.contextmanager
def announced(root: Path, url: str) -> Iterator[Path]:
    """While inside, a runtime file says that the server at `url` serves the store at `root`."""
    path = runtime_dir() / f"server-{os.getpid()}.json"
    about = {"store": str(Path(root).resolve()), "url": url, "pid": os.getpid()}
    write_atomic(path, lambda file: file.write(json.dumps(about).encode()))
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def running_server(root: Path) -> str | None:
    """The address of a live server of the store at `root` on this machine, or None."""
    folder, key, store = runtime_dir(), store_key(root), str(Path(root).resolve())
    for path in sorted(folder.glob("server-*.json")) if folder.is_dir() else ():
        with contextlib.suppress(OSError, ValueError, KeyError):
            about = json.loads(path.read_text(encoding="utf-8"))
            if about["store"] == store and _alive(int(about["pid"])) and _answers(about["url"], key):
                return str(about["url"])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _answers(url: str, key: str) -> bool:
    """Whether `url` is an aosa server of the store with digest `key` (its pid may have been reused)."""
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # a local address, never via a proxy
    with direct.open(url.rstrip("/") + "/health", timeout=HEALTH_SECONDS) as reply:
        return json.loads(reply.read()).get("store") == key
