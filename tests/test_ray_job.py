"""`ray job submit` of `python -m aosa.jobs.evaluate` to a local head started with `ray start --head`,
token authentication on: the job runs, the store answers, and a client without the token is refused."""

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from aosa.engine.datasets.manifests import write_manifest
from aosa.schemas.manifest import ManifestRow
from tests.stored import stored_rows
from tests.videos import moving_square, write_video

REPO = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def head(tmp_path):
    """A blocking `ray start --head` in its own process group, with a token of the test's own."""
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # the job's `python`
    env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env.pop("RAY_ADDRESS", None)
    dashboard = free_port()
    temp_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    ports = {"--port": free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
             "--node-manager-port": free_port(), "--object-manager-port": free_port(),
             "--dashboard-agent-listen-port": free_port(), "--metrics-export-port": free_port(),
             "--runtime-env-agent-port": free_port()}
    command = [RAY, "start", "--head", "--block", "--num-cpus", "4", "--temp-dir", temp_dir,
               "--disable-usage-stats", *[str(part) for pair in ports.items() for part in pair]]
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while subprocess.run([RAY, "job", "list", "--address", address], env=env,
                             capture_output=True).returncode != 0:
            assert process.poll() is None and time.monotonic() < deadline, "the Ray head did not come up"
            time.sleep(2)
        yield address, env
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.slow
def test_ray_job_submit_runs_evaluate_with_token_auth(head, tmp_path):
    address, env = head
    video = write_video(tmp_path / "clip.mp4", moving_square(18, 96, 128))
    manifest = tmp_path / "manifest.csv"
    write_manifest([ManifestRow("clip", video, label=0)], manifest)
    store = tmp_path / "store"
    job = ["--working-dir", str(REPO), "--", "python", "-m", "aosa.jobs.evaluate", "--manifest", str(manifest),
           "--model", "probe3d", "--methods", "aosa-approx", "--store", str(store), "--run-id", "job",
           "--model-actors", "1"]

    no_token = {key: value for key, value in env.items() if key != "RAY_AUTH_TOKEN_PATH"}
    refused = subprocess.run([RAY, "job", "submit", "--address", address, *job],
                             env={**no_token, "RAY_AUTH_TOKEN": "not-the-token"}, capture_output=True, text=True)
    assert refused.returncode != 0 and "Invalid authentication token" in refused.stdout + refused.stderr
    assert not store.exists()

    submitted = subprocess.run([RAY, "job", "submit", "--address", address, *job], env=env, cwd=REPO,
                               capture_output=True, text=True, timeout=600)
    assert submitted.returncode == 0, submitted.stdout[-2000:] + submitted.stderr[-2000:]
    assert "succeeded" in submitted.stdout + submitted.stderr
    rows = stored_rows(store, "metrics", "job")
    assert [(row["video_id"], row["method"], row["status"]) for row in rows] == [("clip", "aosa-approx", "ok")]


def test_cluster_yaml_is_a_valid_launcher_config_that_keeps_token_auth():
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [command for command in commands if "ray start" in command]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token" in command for command in starts)
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert "disabled" not in (REPO / "cluster.yaml").read_text()
