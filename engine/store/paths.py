"""Names and atomic writes of the result store's files: hive partition names, loose and compacted file names.

Every file is written under a hidden `.<name>.<random>.tmp` beside its final name, flushed to disk, then
renamed, so no reader ever sees a partial file; `write_atomic` is the one place that writes a file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

LOOSE_GLOB = "part-*.parquet"  # files a writer stores (one flush of one method partition); temp files never match
COMPACTED_GLOB = "gen-*.parquet"  # merged files of `aosa compact`; read only when a generation record names them
TEMP_GLOB = ".*.tmp"           # what a write that died midway leaves


def partition_value(value: str) -> str:
    """A path-safe, reversible (urllib.parse.unquote) form of a partition value: only [A-Za-z0-9_.~-] stay."""
    quoted = quote(value, safe="")
    return "%2E" + quoted[1:] if quoted.startswith(".") else quoted  # never a hidden or '..' name


def partition(key: str, value: str) -> str:
    """One hive directory name, `key=<quoted value>`."""
    return f"{key}={partition_value(value)}"


def loose_name(group: str) -> str:
    """The file name one flush group gives its timings, maps and metrics files alike."""
    return f"part-{group}.parquet"


def compacted_name(generation: str, index: int) -> str:
    """The name of one merged file of a compaction generation (never matches LOOSE_GLOB)."""
    return f"gen-{generation}-{index:05d}.parquet"


def write_atomic(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """`write` into a hidden temp file beside `path`, fsync, then rename over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
