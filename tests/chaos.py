"""A chaos run: evaluate synthetic clips while a model actor, a decode actor and then the driver itself are
killed (SIGKILL), resume the run, and check that every unit is stored exactly once and nothing is lost.

Run as `python -m tests.chaos VIDEOS WORKDIR` (the driver is a process of its own, so it can be killed);
prints each kill as it happens and a line `RESULT {json}` with the counts and seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil

from aosa.engine.datasets.synthetic import write_benchmark
from tests.stored import stored_rows

METHODS = ("aosa-approx", "osa")  # one map on one actor, one map sharded over both actors
RUN_ID = "chaos"


def evaluate_command(manifest: Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "aosa.jobs.evaluate", "--manifest", str(manifest), "--model", "probe",
            "--methods", ",".join(METHODS), "--store", str(store), "--run-id", RUN_ID, "--model-actors", "2",
            "--max-in-flight", "4"]


def maps_written(store: Path) -> int:
    """Units whose map has landed (maps are written unbuffered, so this counts progress as it happens)."""
    return sum(1 for _ in (store / "maps").rglob("*.npy")) if (store / "maps").exists() else 0


def kill_one(driver: subprocess.Popen, marker: str) -> int | None:
    """SIGKILL one process of the driver's own Ray cluster (its descendants) whose command line names `marker`
    (a Ray actor's class); its pid, or None."""
    for process in psutil.Process(driver.pid).children(recursive=True):
        try:
            if any(marker in part for part in process.cmdline()):
                os.kill(process.pid, signal.SIGKILL)
                return process.pid
        except psutil.NoSuchProcess:
            continue
    return None


def wait_for(store: Path, maps: int, driver: subprocess.Popen, timeout: float = 900) -> None:
    deadline = time.monotonic() + timeout
    while maps_written(store) < maps and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)


def stored_units(store: Path) -> tuple[Counter, Counter, int]:
    """How often each (video, method) is stored, the statuses of the stored rows, and the map files on disk
    that no stored row points at (left by a killed driver and not cleaned up)."""
    if not (store / "metrics").exists():
        return Counter(), Counter(), 0
    rows = stored_rows(store, "metrics", RUN_ID)
    referenced = {Path(row["map_path"]).name for row in rows if row["map_path"]}
    orphans = sum(1 for path in (store / "maps").rglob("*.npy") if path.name not in referenced)
    return Counter((row["video_id"], row["method"]) for row in rows), Counter(row["status"] for row in rows), orphans


def main(videos: str, workdir: str) -> int:
    folder, count = Path(workdir), int(videos)
    manifest = write_benchmark(folder / "clips", videos=count, seed=3)
    store, units = folder / "store", count * len(METHODS)
    began = time.perf_counter()
    log = (folder / "driver.log").open("w")  # a file, not a pipe: a full pipe would stall the driver
    driver = subprocess.Popen(evaluate_command(manifest, store), stdout=log, stderr=log)
    kills = []
    for fraction, marker in ((0.15, "ModelWorker"), (0.3, "VideoPreparer"), (0.5, None)):
        wait_for(store, max(1, int(fraction * units)), driver)
        if driver.poll() is not None:
            break
        pid = kill_one(driver, marker) if marker else driver.pid
        if marker is None:
            driver.kill()
        kills.append({"what": marker or "driver", "pid": pid, "maps_before": maps_written(store),
                      "seconds": round(time.perf_counter() - began, 1)})
        print(f"killed {kills[-1]}", flush=True)
    first_code = driver.wait()
    before_resume = len(stored_units(store)[0])
    resumed = subprocess.run(evaluate_command(manifest, store), stdout=log, stderr=log)
    log.close()
    stored, statuses, orphans = stored_units(store)
    result = {
        "videos": count, "units": units, "kills": kills, "first_exit": first_code, "resume_exit": resumed.returncode,
        "stored_before_resume": before_resume, "stored_units": len(stored), "orphan_maps": orphans,
        "duplicates": sum(n - 1 for n in stored.values()),
        "missing": units - len(stored), "statuses": dict(statuses), "seconds": round(time.perf_counter() - began, 1),
    }
    print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
