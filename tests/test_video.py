"""Decoding with PyAV and DALI: agreement, backend choice, frame offsets and every bad-input kind."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from aosa.engine.errors import ConfigError, VideoError
from aosa.engine.io import video
from aosa.engine.io.video import choose_backend, decode_frames, probe_video
from tests.videos import bigbuckbunny_path, moving_square, square_left, write_video

STEP = 2  # moving_square's default step: frame t has its square's left edge at 2t
FRAMES = moving_square(24, height=48, width=80)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One small file per codec/container (24 frames of 48x80) plus the broken files derived from them."""
    folder = tmp_path_factory.mktemp("videos")
    files = {
        "vp9": write_video(folder / "square.webm", FRAMES, "libvpx-vp9"),
        "h264": write_video(folder / "square.mp4", FRAMES, "libx264"),
        "mjpeg": write_video(folder / "square.avi", FRAMES, "mjpeg"),
        "gray": write_video(folder / "gray.mov", FRAMES[..., 1], "png", pix_fmt="gray"),
        "rgba": write_video(folder / "rgba.mov", _with_alpha(FRAMES), "png", pix_fmt="rgba"),
        "vp9_alpha": write_video(folder / "alpha.webm", _with_alpha(FRAMES), "libvpx-vp9", pix_fmt="yuva420p"),
        "ffv1": write_video(folder / "lossless.mkv", FRAMES, "ffv1"),
    }
    files["half_mp4"] = _first_half(files["h264"], folder / "half.mp4")
    files["half_webm"] = _first_half(files["vp9"], folder / "half.webm")
    files["empty"] = folder / "empty.mp4"
    files["empty"].write_bytes(b"")
    files["text"] = folder / "notes.mp4"
    files["text"].write_text("this is not a video\n" * 20)
    files["audio"] = _write_wav(folder / "tone.wav")
    # A codec id FFmpeg does not know: same-length patch of the Matroska CodecID string.
    files["unknown_codec"] = folder / "unknown.mkv"
    files["unknown_codec"].write_bytes(files["ffv1"].read_bytes().replace(b"V_FFV1", b"V_QQQQ"))
    return files


def _with_alpha(frames: np.ndarray) -> np.ndarray:
    return np.concatenate([frames, np.full(frames.shape[:3] + (1,), 128, np.uint8)], axis=3)


def _first_half(source: Path, target: Path) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    return target


def _write_wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(np.zeros(800, np.int16).tobytes())
    return path


def _positions(frames: np.ndarray) -> list[int]:
    return [square_left(frame) for frame in frames]


def test_probe_reports_codec_size_frames_and_rate(clips: dict[str, Path]) -> None:
    info = probe_video(clips["vp9"])
    assert (info.path, info.codec, info.width, info.height, info.frames, info.fps) == (
        clips["vp9"], "vp9", 80, 48, 24, 25.0)
    assert probe_video(clips["h264"]).codec == "h264"


def test_vp9_dali_and_pyav_agree(clips: dict[str, Path]) -> None:
    dali = decode_frames(clips["vp9"], 2, 8, backend="dali")
    pyav = decode_frames(clips["vp9"], 2, 8, backend="pyav")
    assert dali.shape == pyav.shape == (8, 48, 80, 3) and dali.dtype == pyav.dtype == np.uint8
    assert np.abs(dali.astype(int) - pyav).mean() < 2
    assert _positions(dali) == _positions(pyav)


@pytest.mark.parametrize(("name", "backend"), [("vp9", "pyav"), ("vp9", "dali"), ("h264", "pyav"),
                                               ("mjpeg", "dali"), ("mjpeg", "pyav")])
def test_start_offset_selects_the_right_frames(clips: dict[str, Path], name: str, backend: str) -> None:
    frames = decode_frames(clips[name], 5, 6, backend=backend)
    assert _positions(frames) == [STEP * t for t in range(5, 11)]


def test_h264_auto_uses_pyav_on_cpu_and_dali_on_gpu(clips: dict[str, Path]) -> None:
    info = probe_video(clips["h264"])
    assert choose_backend(info, "cpu") == "pyav"
    assert choose_backend(info, "cuda:1") == "dali"
    frames = decode_frames(clips["h264"], 0, 16)
    assert frames.shape == (16, 48, 80, 3)
    assert np.abs(frames.astype(int) - FRAMES[:16]).mean() < 2


def test_mjpeg_decodes_with_dali(clips: dict[str, Path]) -> None:
    assert choose_backend(probe_video(clips["mjpeg"]), "cpu") == "dali"
    frames = decode_frames(clips["mjpeg"], 0, 10, backend="dali")
    assert frames.shape == (10, 48, 80, 3)
    assert np.abs(frames.astype(int) - FRAMES[:10]).mean() < 3


@pytest.mark.parametrize(("name", "backend"), [("gray", "auto"), ("rgba", "auto"), ("vp9_alpha", "dali"),
                                               ("vp9_alpha", "pyav")])
def test_grey_and_alpha_decode_to_rgb(clips: dict[str, Path], name: str, backend: str) -> None:
    frames = decode_frames(clips[name], 3, 4, backend=backend)
    assert frames.shape == (4, 48, 80, 3)
    assert _positions(frames) == [STEP * t for t in range(3, 7)]
    if name == "gray":
        assert np.array_equal(frames[..., 0], frames[..., 2])


def test_real_h264_clip() -> None:
    path = bigbuckbunny_path()
    info = probe_video(path)
    assert (info.codec, info.width, info.height) == ("h264", 1280, 720)
    frames = decode_frames(path, 0, 16)
    assert frames.shape == (16, 720, 1280, 3) and frames.dtype == np.uint8
    assert 20 < frames.mean() < 235 and frames.std() > 10
    assert np.abs(np.diff(frames.astype(np.int16), axis=0)).mean() > 0.1  # the frames differ


@pytest.mark.parametrize(("name", "backend", "kind"), [
    ("missing", "auto", "missing_file"),
    ("empty", "auto", "empty_file"),
    ("text", "auto", "not_video"),
    ("audio", "auto", "no_video_stream"),
    ("half_mp4", "auto", "not_video"),  # its index (moov) sat at the end, so the container does not open
    ("half_webm", "pyav", "decode_error"),
    ("half_webm", "dali", "decode_error"),
    ("unknown_codec", "auto", "unsupported_codec"),
    ("h264", "dali", "unsupported_codec"),  # DALI's CPU decoder cannot read H.264
])
def test_bad_input_gives_its_kind_and_names_the_file(clips: dict[str, Path], tmp_path: Path, name: str,
                                                      backend: str, kind: str) -> None:
    path = clips.get(name, tmp_path / "missing.mp4")
    with pytest.raises(VideoError) as caught:
        decode_frames(path, 0, 16, backend=backend)
    assert caught.value.kind == kind
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("backend", ["pyav", "dali"])
def test_too_few_frames_says_how_many(clips: dict[str, Path], backend: str) -> None:
    with pytest.raises(VideoError) as caught:
        decode_frames(clips["vp9"], 20, 16, backend=backend)
    assert caught.value.kind == "too_few_frames"
    assert "has 24 frames" in str(caught.value) and "needs 36" in str(caught.value)


@pytest.mark.parametrize(("start", "count", "backend", "device"), [
    (-1, 4, "auto", "cpu"), (0, 0, "auto", "cpu"), (0, 4, "gpu", "cpu"), (0, 4, "auto", "tpu")])
def test_bad_request_is_a_config_error(clips: dict[str, Path], start: int, count: int, backend: str,
                                       device: str) -> None:
    with pytest.raises(ConfigError):
        decode_frames(clips["vp9"], start, count, backend=backend, device=device)


def test_without_dali_auto_uses_pyav_and_dali_is_refused(clips: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(video, "dali_unavailable", lambda: "ImportError: no module named nvidia.dali")
    assert choose_backend(probe_video(clips["vp9"]), "cpu") == "pyav"
    assert decode_frames(clips["vp9"], 0, 4).shape == (4, 48, 80, 3)
    with pytest.raises(ConfigError, match="DALI"):
        decode_frames(clips["vp9"], 0, 4, backend="dali")


def test_dali_failure_is_wrapped_and_auto_falls_back(clips: dict[str, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> np.ndarray:
        raise RuntimeError("\n[/opt/dali/decoder.cc:1] Assert failed: NVDEC cannot\nC++ context: ...")

    monkeypatch.setattr(video, "_run_dali", broken)
    assert _positions(decode_frames(clips["vp9"], 1, 3)) == [2, 4, 6]
    with pytest.raises(VideoError) as caught:
        decode_frames(clips["vp9"], 1, 3, backend="dali")
    assert caught.value.kind == "decode_error"
    first_line = "[/opt/dali/decoder.cc:1] Assert failed: NVDEC cannot"
    assert str(caught.value) == f"{clips['vp9']}: DALI could not decode it: {first_line}"
