"""The scheduler's small helpers: one-line failures."""

import ray

from aosa.engine.errors import VideoError
from aosa.engine.runtime.workers import TORCHSCRIPT_PREAMBLE, Failure


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
