"""Runs that share a machine: `aosa evaluate` without `--address` starts a Ray of its own beside a `ray start`
cluster or a crashed one's stale address file, never joining them; and the tests that kill actors and start or
stop Ray clusters pass while an unrelated evaluation runs beside them, which they leave alone."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from aosa.engine.datasets.manifests import write_manifest
from aosa.schemas.manifest import ManifestRow
from tests.ray_head import free_port, ray_head
from tests.videos import moving_square, write_video

ROOT = Path(__file__).resolve().parent.parent
# The tests that kill actors or nodes and start or stop Ray clusters of their own, run beside a neighbour.
BESIDE = ("tests/test_faults.py::test_killed_model_actor_is_restarted_and_its_shard_redone", "tests/test_chaos.py",
          "tests/test_ray_job.py::test_ray_job_submit_runs_evaluate_with_token_auth",
          "tests/test_neighbours.py::test_evaluate_without_address_starts_its_own_ray_beside_a_ray_start_head")
NEIGHBOUR_VIDEOS = 120  # enough for the neighbour to outlast BESIDE on a busy 2-core machine


def evaluate_with_ray_tmpdir(root: Path, env: dict[str, str], folder: Path) -> subprocess.CompletedProcess:
    """`aosa evaluate` of one clip without `--address`, in a process whose default Ray temp dir is `root/ray`
    (RAY_TMPDIR), so `root/ray/ray_current_cluster` is the address file a bare `ray.init()` would follow."""
    manifest = folder / "manifest.csv"
    write_manifest([ManifestRow("clip", write_video(folder / "clip.mp4", moving_square(18, 96, 128)), label=0)],
                   manifest)
    command = [sys.executable, "-m", "aosa.jobs.evaluate", "--manifest", str(manifest), "--model", "probe3d",
               "--methods", "aosa-approx", "--store", str(folder / "store"), "--run-id", "beside",
               "--model-actors", "1"]
    env = {key: value for key, value in env.items() if key != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(root)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def sessions(temp_dir: Path) -> set[Path]:
    return set(temp_dir.glob("session_2*"))


def drivers(session: Path) -> list[Path]:
    """The log files of the drivers that joined a Ray session (one per driver process)."""
    return list((session / "logs").glob("python-core-driver-*"))


@pytest.mark.slow
def test_evaluate_without_address_starts_its_own_ray_beside_a_ray_start_head(tmp_path):
    with ray_head(num_cpus=2) as head:  # room for the run's actors: joining it would succeed, and be seen
        address_file = head.temp_dir / "ray_current_cluster"
        written, (head_session,) = address_file.read_text(), sessions(head.temp_dir)
        result = evaluate_with_ray_tmpdir(head.root, head.env, tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "run beside: 1 units ok, 0 failed" in result.stdout
        own = sessions(head.temp_dir) - {head_session}
        assert len(own) == 1, "the run started no Ray of its own beside the head's"
        assert drivers(own.pop()) and not drivers(head_session)  # its driver joined its own Ray, none the head
        assert head.process.poll() is None and address_file.read_text() == written  # the head left as it was


@pytest.mark.slow
def test_evaluate_without_address_ignores_a_stale_address_file(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="rs", dir="/tmp"))  # short: Ray's socket paths must stay under 108 bytes
    try:
        (root / "ray").mkdir()
        (root / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{free_port()}")  # a crashed cluster's
        (root / "auth_token").write_text(secrets.token_hex(32))
        env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(root / "auth_token")}
        result = evaluate_with_ray_tmpdir(root, env, tmp_path)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        assert "run beside: 1 units ok, 0 failed" in result.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_for_first_map(store: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not list(store.glob("maps/**/*.npy")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("AOSA_NEIGHBOUR_TEST") != "1",
                    reason="about 10 minutes: re-runs the killing tests beside a neighbour (AOSA_NEIGHBOUR_TEST=1)")
def test_ray_tests_pass_beside_an_unrelated_evaluation_that_finishes_untouched(tmp_path):
    root = Path(tempfile.mkdtemp(prefix="rn", dir="/tmp"))  # the neighbour's Ray temp dir
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"} | {"RAY_TMPDIR": str(root)}
    log = tmp_path / "neighbour.log"
    with log.open("w") as out:
        neighbour = subprocess.Popen([sys.executable, "-m", "tests.neighbour", str(NEIGHBOUR_VIDEOS),
                                      str(tmp_path / "neighbour")], cwd=ROOT, env=env, stdout=out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for_first_map(tmp_path / "neighbour" / "store", neighbour)
        assert neighbour.poll() is None, log.read_text()[-3000:]
        suite = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *BESIDE], cwd=ROOT,
                               capture_output=True, text=True, timeout=1800)
        outlasted = neighbour.poll() is None
        neighbour.wait(timeout=1800)
    finally:
        if neighbour.poll() is None:
            os.killpg(neighbour.pid, signal.SIGKILL)  # its own process group: the neighbour and its Ray
            neighbour.wait()
        shutil.rmtree(root, ignore_errors=True)
    assert suite.returncode == 0, suite.stdout[-3000:] + suite.stderr[-2000:]
    assert outlasted, "the neighbour finished before the tests did; give it more videos"
    outcome = json.loads(next(line for line in log.read_text().splitlines() if line.startswith("RESULT "))[7:])
    assert (outcome["ok"], outcome["failed"], outcome["skipped"]) == (2 * NEIGHBOUR_VIDEOS, 0, 0), outcome
    assert outcome["restarts"] == 0, outcome  # none of its actors was killed
