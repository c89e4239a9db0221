"""A multi-node run on one machine: a Ray cluster of a head and two worker nodes (`ray.cluster_utils`), an
evaluation whose model actors spread over the workers, and one worker node removed mid-run.

Run as `python -m tests.multinode MANIFEST STORE` (a process of its own: the test session has its own Ray);
prints a line `RESULT {json}`: the exit code, the nodes the model actors sat on, whether a node was removed.
The cluster's sessions and its address file live in a temp dir of its own, never in the machine's /tmp/ray.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster
from ray.util.state import list_actors

from aosa.engine.runtime.whole_worker import VideoModelWorker  # the class behind engine.runtime.actors.ModelActor
from aosa.jobs.evaluate import main as evaluate


def model_actor_nodes() -> list[str]:
    """Node ids of the live model actors."""
    actors = list_actors(filters=[("class_name", "=", VideoModelWorker.__name__), ("state", "=", "ALIVE")])
    return sorted(actor.node_id for actor in actors)


def remove_a_node_once_units_land(cluster: Cluster, node: object, store: Path, seen: dict) -> None:
    """Wait for the first finished map, note where the model actors sit, then take `node` away."""
    deadline = time.monotonic() + 300
    while not list((store / "maps").rglob("*.npy")) and time.monotonic() < deadline:  # maps land unbuffered
        time.sleep(0.2)
    seen["nodes"] = model_actor_nodes()
    cluster.remove_node(node, allow_graceful=False)
    seen["removed"] = True


def main(manifest: str, store: str) -> int:
    temp_dir = tempfile.mkdtemp(prefix="rn", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    os.environ["RAY_TMPDIR"] = temp_dir  # Ray's default temp dir, so the address file `Cluster` writes lands here
    cluster = Cluster()
    try:
        cluster.add_node(num_cpus=1)  # the head
        cluster.add_node(num_cpus=2)
        doomed = cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        seen: dict = {"removed": False}
        remover = threading.Thread(target=remove_a_node_once_units_land, args=(cluster, doomed, Path(store), seen))
        remover.start()
        code = evaluate(["--manifest", manifest, "--model", "probe3d", "--methods", "osa,aosa-approx", "--store",
                         store, "--run-id", "multinode", "--address", cluster.address, "--model-actors", "2",
                         "--max-in-flight", "2", "--stride", "32"])
        remover.join()
        print("RESULT " + json.dumps({"code": code, **seen}), flush=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
