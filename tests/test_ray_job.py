"""`ray job submit` of `python -m aosa.jobs.evaluate` to a local head started with `ray start --head`,
token authentication on: the job runs, the store answers, and a client without the token is refused."""

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from aosa.engine.datasets.manifests import write_manifest
from aosa.schemas.manifest import ManifestRow
from tests.ray_head import RAY, ray_head
from tests.stored import stored_rows
from tests.videos import moving_square, write_video

REPO = Path(__file__).resolve().parents[1]


def ignored_by_git() -> list[str]:
    """What git ignores in the repository, from .gitignore and .git/info/exclude alike (a job's upload reads only
    the first), as runtime-env excludes: the job's working dir is the project as git sees it."""
    listed = subprocess.run(["git", "ls-files", "--others", "--ignored", "--exclude-standard", "--directory"],
                            cwd=REPO, capture_output=True, text=True)
    return ["/" + path for path in listed.stdout.splitlines()] if listed.returncode == 0 else []


@pytest.fixture()
def head():
    """A `ray start --head` of the test's own (tests.ray_head): its jobs address and an environment with its token."""
    with ray_head() as running:
        yield running.address, running.env


@pytest.mark.slow
def test_ray_job_submit_runs_evaluate_with_token_auth(head, tmp_path):
    address, env = head
    video = write_video(tmp_path / "clip.mp4", moving_square(18, 96, 128))
    manifest = tmp_path / "manifest.csv"
    write_manifest([ManifestRow("clip", video, label=0)], manifest)
    store = tmp_path / "store"
    job = ["--working-dir", str(REPO), "--runtime-env-json", json.dumps({"excludes": ignored_by_git()}), "--",
           "python", "-m", "aosa.jobs.evaluate", "--manifest", str(manifest), "--model", "probe3d", "--methods",
           "aosa-approx", "--store", str(store), "--run-id", "job", "--model-actors", "1"]

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
