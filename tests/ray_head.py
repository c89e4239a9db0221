"""A `ray start --head` of a test's own: blocking, in its own process group, on free ports, with a temp dir and
a token of its own (token authentication on); stopped through its own process group and its folder removed."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

RAY = str(Path(sys.executable).parent / "ray")


@dataclass(frozen=True)
class Head:
    """A running head: its jobs (dashboard) address, an environment holding its token, its own folder (Ray's
    temp dir is `root / "ray"`: with RAY_TMPDIR=root a process finds the head as the machine's default)."""

    address: str
    env: dict[str, str]
    root: Path
    process: subprocess.Popen

    @property
    def temp_dir(self) -> Path:
        return self.root / "ray"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def ray_head(num_cpus: int = 4) -> Iterator[Head]:
    """Start a head and wait until it answers `ray job list`; stop it and remove its folder on the way out."""
    root = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))  # short: Ray's socket paths must stay under 108 bytes
    try:
        token = root / "auth_token"
        token.write_text(secrets.token_hex(32))
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])  # a job's `python`
        env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
        env.pop("RAY_ADDRESS", None)
        dashboard = free_port()
        ports = {"--port": free_port(), "--dashboard-port": dashboard, "--ray-client-server-port": free_port(),
                 "--node-manager-port": free_port(), "--object-manager-port": free_port(),
                 "--dashboard-agent-listen-port": free_port(), "--metrics-export-port": free_port(),
                 "--runtime-env-agent-port": free_port()}
        command = [RAY, "start", "--head", "--block", "--num-cpus", str(num_cpus), "--temp-dir", str(root / "ray"),
                   "--disable-usage-stats", *[str(part) for pair in ports.items() for part in pair]]
        process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            head = Head(f"http://127.0.0.1:{dashboard}", env, root, process)
            wait_until_up(head)
            yield head
        finally:
            stop(process)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_until_up(head: Head, timeout: float = 120) -> None:
    """Until the head answers jobs calls and has written its address file (the last step of `ray start`)."""
    deadline = time.monotonic() + timeout
    while not (head.temp_dir / "ray_current_cluster").exists() or subprocess.run(
            [RAY, "job", "list", "--address", head.address], env=head.env, capture_output=True).returncode != 0:
        assert head.process.poll() is None and time.monotonic() < deadline, "the Ray head did not come up"
        time.sleep(2)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the head's own process group, SIGKILL it if it lingers (never `ray stop`: that stops every
    cluster on the machine)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
