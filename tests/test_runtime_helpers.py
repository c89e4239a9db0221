"""The scheduler's small helpers: shards of a map's masks and curve points, and one-line failures."""

import pytest
import ray

from aosa.engine.errors import VideoError
from aosa.engine.runtime.video_units import shards
from aosa.engine.runtime.workers import TORCHSCRIPT_PREAMBLE, Failure


@pytest.mark.parametrize("count, parts", [(58, 2), (58, 3), (7, 4), (3, 5), (1, 1), (0, 2)])
def test_shards_cover_the_items_once_in_order_with_sizes_differing_by_at_most_one(count, parts):
    found = shards(count, parts)
    assert [item for shard in found for item in range(count)[shard]] == list(range(count))
    sizes = [shard.stop - shard.start for shard in found]
    assert len(found) == min(count, parts) and all(sizes) and (not sizes or max(sizes) - min(sizes) <= 1)


def test_a_failure_is_one_line_naming_the_file_once():
    assert Failure.of(ValueError("bad frame\nmore detail"), "a.mp4") == Failure("ValueError", "a.mp4: bad frame")
    assert Failure.of(VideoError("a.mp4", "zero bytes", "empty_file"), "a.mp4") == Failure("empty_file",
                                                                                           "a.mp4: zero bytes")
    assert Failure.of(RuntimeError(), "a.mp4") == Failure("RuntimeError", "a.mp4: RuntimeError")


def test_a_failure_inside_a_ray_task_error_is_the_user_exception():
    error = ray.exceptions.RayTaskError("occlusion_scores", "Traceback ...", KeyError("layer4"))
    assert Failure.of(error, "a.mp4") == Failure("KeyError", "a.mp4: 'layer4'")


def test_a_torchscript_failure_is_its_last_line():
    error = RuntimeError(f"{TORCHSCRIPT_PREAMBLE}.\nTraceback of TorchScript ...\nbuiltins.RuntimeError: too bright")
    assert Failure.of(error, "a.mp4") == Failure("RuntimeError", "a.mp4: too bright")
