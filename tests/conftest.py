"""Shared fixtures: one embedded Ray cluster per test session (starting one takes seconds)."""

import pytest
import ray


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray cluster with CPU slots for two model actors and a decode actor."""
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=300 * 1024**2, log_to_driver=False)
    yield
    ray.shutdown()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that needs the Ray cluster is slow (`pytest -m "not slow"` is the quick loop without it)."""
    for item in items:
        if "ray_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
