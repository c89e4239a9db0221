"""Issue 15: every decode backend that reads a stream gives the same RGB frames (engine.io.colour).

Tolerance: mean |difference| <= 0.5 and max <= 8 grey levels (8-bit) between any two backends; on the CPU
DALI and PyAV were measured to agree to the bit (mean 0, max 0) on every fixture DALI reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from aosa.engine.io import video
from aosa.engine.io.video import choose_backend, decode_clip, probe_video
from tests.videos import colour_pattern, write_video

MEAN_TOLERANCE, MAX_TOLERANCE = 0.5, 8
SOURCE = colour_pattern()

# name: (file suffix, encoder, pixel format, range, matrix)
FIXTURES = {
    "h264_420_tv": (".mp4", "libx264", "yuv420p", "tv", None),
    "h264_420_pc": (".mp4", "libx264", "yuvj420p", "pc", None),
    "h264_444_tv": (".mp4", "libx264", "yuv444p", "tv", None),
    "h264_444_pc": (".mp4", "libx264", "yuv444p", "pc", None),
    "h264_420_709": (".mp4", "libx264", "yuv420p", "tv", "bt709"),
    "vp9_420_tv": (".webm", "libvpx-vp9", "yuv420p", "tv", None),
    "vp9_420_pc": (".webm", "libvpx-vp9", "yuv420p", "pc", None),
    "vp9_444_tv": (".webm", "libvpx-vp9", "yuv444p", "tv", None),
    "vp9_444_pc": (".webm", "libvpx-vp9", "yuv444p", "pc", None),
    "vp9_420_601": (".webm", "libvpx-vp9", "yuv420p", "tv", "bt601"),
    "vp9_420_709": (".webm", "libvpx-vp9", "yuv420p", "tv", "bt709"),
    "mjpeg_420_pc": (".avi", "mjpeg", "yuvj420p", "pc", None),
    "mjpeg_444_pc": (".avi", "mjpeg", "yuvj444p", "pc", None),
    "mjpeg_420_tv": (".avi", "mjpeg", "yuv420p", "tv", None),
    "mjpeg_444_tv": (".avi", "mjpeg", "yuv444p", "tv", None),
}
# Streams DALI cannot bring to parity: it converts with BT.601 whatever the stream's matrix says.
DALI_MISMATCHED = {"h264_420_709", "vp9_420_709"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("parity")
    return {name: write_video(folder / f"{name}{suffix}", SOURCE, codec, pix_fmt=fmt, color_range=rng, matrix=mat)
            for name, (suffix, codec, fmt, rng, mat) in FIXTURES.items()}


def _difference(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return float(diff.mean()), int(diff.max())


def _assert_parity(name: str, device: str, files: dict[str, Path]) -> None:
    info = probe_video(files[name])
    reference = decode_clip(info, 0, 8, "pyav")
    assert reference.decoder.startswith("pyav ")
    if choose_backend(info, device) != "dali":
        pytest.skip(f"DALI on {device} does not read {name} here")
    dali = decode_clip(info, 0, 8, "dali", device)
    assert dali.decoder.startswith("dali-cpu " if device == "cpu" else "dali-gpu ")
    mean, largest = _difference(dali.frames, reference.frames)
    assert mean <= MEAN_TOLERANCE and largest <= MAX_TOLERANCE, f"{name} on {device}: mean {mean:.3f}, max {largest}"


@pytest.mark.parametrize("name", sorted(set(FIXTURES) - DALI_MISMATCHED))
def test_dali_cpu_matches_pyav(name: str, files: dict[str, Path]) -> None:
    if name.startswith("h264"):
        pytest.skip("DALI's CPU decoder does not read H.264")
    _assert_parity(name, "cpu", files)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA for DALI's GPU decoder")
@pytest.mark.parametrize("name", sorted(set(FIXTURES) - DALI_MISMATCHED))
def test_dali_gpu_matches_pyav(name: str, files: dict[str, Path]) -> None:
    _assert_parity(name, "cuda", files)


@pytest.mark.parametrize("name", ["h264_444_tv", "h264_444_pc", "vp9_444_tv", "vp9_444_pc", "mjpeg_444_tv",
                                  "mjpeg_444_pc"])
def test_the_conversion_reads_range_and_matrix_from_the_stream(name: str, files: dict[str, Path]) -> None:
    # 4:4:4 has no chroma loss, so frames come back close to what was written only if range is read right.
    mean, _ = _difference(decode_clip(probe_video(files[name]), 0, 8, "pyav").frames, SOURCE)
    assert mean <= 2.0, f"{name}: mean {mean:.3f}"


def test_bt709_stream_is_read_with_its_matrix(files: dict[str, Path]) -> None:
    info = probe_video(files["vp9_420_709"])
    assert info.matrix == "bt709" and info.pix_fmt == "yuv420p"
    tagged = decode_clip(info, 0, 8, "pyav").frames
    assert _difference(tagged, SOURCE)[0] < _difference(tagged, decode_clip(
        probe_video(files["vp9_420_601"]), 0, 8, "pyav").frames)[0] + 8


def test_auto_refuses_dali_where_it_cannot_match(files: dict[str, Path]) -> None:
    assert choose_backend(probe_video(files["vp9_420_709"]), "cpu") == "pyav"
    assert choose_backend(probe_video(files["vp9_420_tv"]), "cpu") == "dali"
    assert choose_backend(probe_video(files["mjpeg_444_pc"]), "cpu") == "dali"
    assert decode_clip(probe_video(files["vp9_420_709"]), 0, 8, "auto").decoder.startswith("pyav ")


def test_explicit_dali_on_a_mismatched_stream_warns_once(files: dict[str, Path],
                                                         caplog: pytest.LogCaptureFixture) -> None:
    video._warn_mismatch.cache_clear()
    info = probe_video(files["vp9_420_709"])
    with caplog.at_level(logging.WARNING, logger="aosa.engine.io.video"):
        dali = decode_clip(info, 0, 8, "dali")
        decode_clip(info, 0, 4, "dali")
    warnings = [record for record in caplog.records if "bt709" in record.getMessage()]
    assert len(warnings) == 1 and "will differ" in warnings[0].getMessage()
    mean, _ = _difference(dali.frames, decode_clip(info, 0, 8, "pyav").frames)
    assert mean > MEAN_TOLERANCE  # the reason auto refuses it
