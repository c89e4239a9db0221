"""Past one machine: on a local three-node Ray cluster the model actors sit on different nodes, so one
video's shards are scored on more than one node, and a worker node removed mid-run loses nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from aosa.engine.datasets.manifests import write_manifest
from aosa.schemas.manifest import ManifestRow
from tests.stored import stored_rows
from tests.videos import moving_square, write_video

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")  # the machine's cluster, which the test leaves alone


def address_file_state() -> tuple[int, bytes] | None:
    """The default address file's modification time and contents, or None when there is none."""
    try:
        return DEFAULT_ADDRESS_FILE.stat().st_mtime_ns, DEFAULT_ADDRESS_FILE.read_bytes()
    except FileNotFoundError:
        return None


@pytest.mark.slow
def test_removing_a_worker_node_mid_run_leaves_every_unit_stored_once(tmp_path):
    rows = [ManifestRow(f"v{i}", write_video(tmp_path / f"v{i}.mp4", moving_square(18, 96, 128, step=1 + i % 3)),
                        label=i % 4) for i in range(8)]
    write_manifest(rows, tmp_path / "manifest.csv")
    store = tmp_path / "store"
    before = address_file_state()
    result = subprocess.run([sys.executable, "-m", "tests.multinode", str(tmp_path / "manifest.csv"), str(store)],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert address_file_state() == before
    outcome = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert outcome["code"] == 0 and outcome["removed"]
    assert len(set(outcome["nodes"])) == 2  # the two model actors sat on two nodes: shards crossed nodes
    stored = stored_rows(store, "metrics", "multinode")
    keys = [(row["video_id"], row["method"]) for row in stored]
    assert len(keys) == len(set(keys)) == 2 * len(rows) and all(row["status"] == "ok" for row in stored)
