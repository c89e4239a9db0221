"""Shared fixtures: one embedded Ray cluster per test session (starting one takes seconds); fp32 CUDA."""

import shutil
import tempfile

import pytest
import ray
import torch

from aosa.engine.models.precision import set_tf32


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster of the session's own, with CPU slots for two model actors and a decode actor: never one
    that runs on the machine already; its sessions and logs live in a temp dir of its own (short: Ray's socket
    paths must stay under 108 bytes), removed afterwards."""
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    try:
        ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=300 * 1024**2,
                 log_to_driver=False, _temp_dir=temp_dir)
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def fp32_cuda():
    """CUDA convolutions and matrix products in fp32 (TF32 off) for one test, as the `eager` backend runs them."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    set_tf32(False)
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the Ray cluster is slow (`pytest -m "not slow"` is the quick loop without it)."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
