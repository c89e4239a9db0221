"""An unrelated evaluation on the same machine as a test run: `aosa evaluate` of synthetic clips on its own
embedded Ray, which tests that start, kill and stop their own Ray clusters and actors must leave alone.

Run as `python -m tests.neighbour VIDEOS WORKDIR` (a process of its own, like a user's run); prints a line
`RESULT {json}`: the run's own counts of units ok, failed and skipped, how often Ray restarted one of its actors
(the GCS actor table of its own cluster: an embedded run starts no dashboard for the state API) and its seconds.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import ray

from aosa.engine.datasets.synthetic import write_benchmark
from aosa.jobs.evaluate import build_parser, evaluate

RUN_ID = "neighbour"


def actor_restarts() -> int:
    """Restarts of every actor this process's Ray cluster has had (dead ones included, until it shuts down)."""
    return sum(actor["NumRestarts"] for actor in ray._private.state.actors().values())


def main(videos: str, workdir: str) -> int:
    folder = Path(workdir)
    manifest = write_benchmark(folder / "clips", videos=int(videos), seed=11)
    began = time.perf_counter()
    summary = evaluate(build_parser().parse_args([
        "--manifest", str(manifest), "--model", "probe", "--methods", "osa,aosa-approx", "--store",
        str(folder / "store"), "--run-id", RUN_ID, "--model-actors", "2", "--max-in-flight", "2"]))
    print("RESULT " + json.dumps({**asdict(summary), "restarts": actor_restarts(),
                                  "seconds": round(time.perf_counter() - began, 1)}), flush=True)
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
