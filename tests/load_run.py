"""The issue-12 load run: a manifest of N rows, every k-th a real clip (a few clips repeated under new ids),
the rest missing files, evaluated with a cheap method; then the store queried before and after compaction.

Run as `python -m tests.load_run ROWS REAL WORKDIR` (REAL of the ROWS are real clips; a process of its own, so
the peak memory is this run's); prints a line `RESULT {json}`: units per second, the driver's peak memory,
metrics files before and after `aosa compact`, and the seconds of a count(*) and a per-method average.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from pathlib import Path

from aosa.engine.datasets.synthetic import write_benchmark
from aosa.engine.store import compaction
from aosa.engine.store.reader import StoreReader
from aosa.jobs.evaluate import main as evaluate
from tests.driver_memory import with_peak_rss

RUN_ID = "load"
QUERIES = {"count": "SELECT count(*) FROM metrics",
           "average": "SELECT method, avg(deletion_auc) FROM metrics GROUP BY 1 ORDER BY 1"}


def write_manifest(path: Path, rows: int, real: int, clips: list[Path]) -> None:
    """`rows` rows with unique ids; `real` of them, evenly spread, cycle through `clips`, the rest are missing."""
    every = max(1, rows // max(1, real))
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["video_id", "path"])
        for i in range(rows):
            if i % every == 0 and i // every < real:
                writer.writerow([f"v{i:07d}", str(clips[(i // every) % len(clips)])])
            else:
                writer.writerow([f"v{i:07d}", f"missing/v{i:07d}.mp4"])


def query_seconds(store: StoreReader) -> dict[str, float]:
    """Seconds of each query in QUERIES (fresh connection each, as `aosa query` opens one)."""
    seconds = {}
    for name, sql in QUERIES.items():
        began = time.perf_counter()
        with store.connect(RUN_ID) as con:
            con.sql(sql).fetchall()
        seconds[name] = round(time.perf_counter() - began, 3)
    return seconds


def main(rows: str, real: str, workdir: str) -> int:
    folder = Path(workdir)
    clips_manifest = write_benchmark(folder / "clips", videos=8, seed=5)
    clips = sorted((clips_manifest.parent / "videos").iterdir())
    manifest = folder / "manifest.csv"
    write_manifest(manifest, int(rows), int(real), clips)
    began = time.perf_counter()
    code, peak = with_peak_rss(lambda: evaluate([
        "--manifest", str(manifest), "--model", "probe", "--methods", "random", "--store", str(folder / "store"),
        "--run-id", RUN_ID, "--model-actors", "2", "--max-in-flight", "8"]))
    seconds = time.perf_counter() - began
    store = StoreReader(folder / "store")
    before = {"files": len(store.files("metrics", RUN_ID)), **query_seconds(store)}
    compaction.compact_run(store.root, RUN_ID)
    after = {"files": len(store.files("metrics", RUN_ID)), **query_seconds(store)}
    print("RESULT " + json.dumps({"rows": int(rows), "real": int(real), "code": code, "seconds": round(seconds, 1),
                                  "units_per_second": round(int(rows) / seconds, 1), "peak_mib": round(peak),
                                  "before_compact": before, "after_compact": after}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
