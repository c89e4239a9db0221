"""Peak memory of the evaluate driver for a manifest of N rows that all point at missing files (each video
is one cheap Ray call and one error row), so what grows is the driver's own bookkeeping per row.

Run as `python -m tests.driver_memory ROWS WORKDIR` (a process of its own, so the peak is this run's);
prints a line `RESULT {json}` with the rows, the driver's peak RSS in MiB and the exit code.
"""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import psutil

from aosa.jobs.evaluate import main as evaluate

T = TypeVar("T")


def write_missing_manifest(path: Path, rows: int) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "path"])
        writer.writerows((f"v{i:07d}", f"missing/v{i:07d}.mp4") for i in range(rows))


def with_peak_rss(run: Callable[[], T]) -> tuple[T, float]:
    """`run()` and this process's peak resident memory in MiB while it ran (sampled every 50 ms)."""
    process, peak, running = psutil.Process(), [0], [True]

    def sample() -> None:
        while running[0]:
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        return run(), peak[0] / 2**20
    finally:
        running[0] = False
        sampler.join()


def main(rows: str, workdir: str) -> int:
    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "manifest.csv"
    write_missing_manifest(manifest, int(rows))
    code, peak = with_peak_rss(lambda: evaluate([
        "--manifest", str(manifest), "--model", "probe3d", "--methods", "random", "--store", str(folder / "store"),
        "--run-id", "memory", "--model-actors", "1", "--max-in-flight", "8"]))
    print("RESULT " + json.dumps({"rows": int(rows), "peak_mib": peak, "code": code}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
