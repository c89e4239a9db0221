"""Decode a clip of RGB frames from a video file (or a frame directory) with NVIDIA DALI where it can, else PyAV.

Every backend yields the same RGB frames (engine.io.colour: the stream's matrix and range, one swscale
conversion); `auto` picks DALI only for streams where it matches, and every clip says which decoder made it.
Every failure is a VideoError (or ConfigError for a bad request) naming the file; raw av or DALI
exceptions never escape. Frame indices count decoded (presented) frames from 0.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from aosa.engine.errors import ConfigError, VideoError
from aosa.engine.io import frames as frame_dir
from aosa.engine.io.colour import dali_mismatch, matrix_name, range_name, rgb_frame

if TYPE_CHECKING:  # PyAV is imported where a file is decoded, not with the module
    import av

log = logging.getLogger(__name__)

BACKENDS = ("auto", "dali", "pyav")
# Codecs (FFmpeg canonical names) that DALI's decoders.video reads, per the DALI 2.x docs.
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
DALI_GPU_CODECS = DALI_CPU_CODECS | {"h264", "hevc", "av1", "mpeg4"}


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a file's first video stream.

    `frames` is the header's frame count, or duration x fps when only a duration is stored; None if unknown.
    """

    path: Path
    codec: str
    width: int
    height: int
    frames: int | None
    fps: float | None
    pix_fmt: str | None = None  # decoded pixel layout, e.g. yuv420p / yuvj420p
    matrix: str | None = None  # colour matrix as FFmpeg reads it: bt709, unspecified (BT.601), ...
    color_range: str | None = None  # tv (limited), pc (full) or unspecified


class Decoded(NamedTuple):
    """Decoded frames (count,H,W,3) uint8 RGB and the decoder that produced them (name and version)."""

    frames: np.ndarray
    decoder: str


class _DaliFailure(Exception):
    """DALI itself failed on a file whose packets looked intact (e.g. a profile its decoder lacks)."""


def probe_video(path: Path | str) -> VideoInfo:
    """Read the container header of `path` (no decoding) and describe its first video stream; a directory
    is a frame directory (codec 'jpeg-frames', fps None)."""
    path = Path(path)
    if path.is_dir():
        return _probe_frame_dir(path)
    _check_file(path)
    with _av_errors(path, "not_video", "not a readable video"), _open(path) as container:
        if not container.streams.video:
            raise VideoError(path, "has no video stream", "no_video_stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None:
            raise VideoError(path, "its video codec has no decoder in FFmpeg (PyAV) or DALI", "unsupported_codec")
        rate = stream.average_rate or stream.guessed_rate
        return VideoInfo(path=path, codec=context.codec.canonical_name, width=context.width,
                         height=context.height, frames=_header_frames(stream, container),
                         fps=float(rate) if rate else None, pix_fmt=context.pix_fmt,
                         matrix=matrix_name(context.colorspace), color_range=range_name(context.color_range))


def _probe_frame_dir(path: Path) -> VideoInfo:
    """Describe a frame directory from its file list and its first frame's header."""
    files = frame_dir.frame_files(path)
    width, height = frame_dir.frame_size(files[0])
    return VideoInfo(path=path, codec=frame_dir.CODEC, width=width, height=height, frames=len(files), fps=None)


def choose_backend(info: VideoInfo, device: str) -> str:
    """'dali' when DALI imports, its decoder for `device` reads the file's codec and its frames match the one
    conversion for this stream (engine.io.colour); else 'pyav'."""
    readable = info.codec in _dali_codecs(device) and dali_unavailable() is None
    return "dali" if readable and _dali_mismatch(info, device) is None else "pyav"


def decoder_name(backend: str, device: str = "cpu") -> str:
    """Provenance of frames decoded by `backend` ('pyav' or 'dali') on `device`, with versions."""
    if backend == "pyav":
        import av  # PyAV is imported where it decodes: frame directories and DALI need no FFmpeg

        return f"pyav {av.__version__} (FFmpeg {av.ffmpeg_version_info})"
    import nvidia.dali

    return f"dali-{'cpu' if _cuda_index(device) is None else 'gpu'} {nvidia.dali.__version__}"


def decode_frames(path: Path | str, start: int, count: int, backend: str = "auto",
                  device: str = "cpu") -> np.ndarray:
    """Frames start..start+count-1 of `path` as uint8 (count,H,W,3) RGB."""
    return decode_video(probe_video(path), start, count, backend, device)


def decode_video(info: VideoInfo, start: int, count: int, backend: str = "auto",
                 device: str = "cpu") -> np.ndarray:
    """Like decode_frames for an already probed file (see decode_clip)."""
    return decode_clip(info, start, count, backend, device).frames


def decode_clip(info: VideoInfo, start: int, count: int, backend: str = "auto", device: str = "cpu") -> Decoded:
    """Frames start..start+count-1 and the decoder that made them; 'auto' falls back to PyAV if DALI fails.

    `device` ('cpu', 'cuda', 'cuda:N') only selects DALI's decoder; the result is always a host array.
    A frame directory is read by one JPEG decoder whatever the backend.
    """
    _check_request(start, count, backend, device)
    if info.codec == frame_dir.CODEC:
        files = frame_dir.frame_files(info.path)
        return Decoded(frame_dir.read_frames(info.path, files, start, count), frame_dir.decoder_name())
    if _resolve_backend(info, backend, device) == "pyav":
        return Decoded(_pyav_frames(info, start, count), decoder_name("pyav"))
    try:
        return Decoded(_dali_frames(info, start, count, device), decoder_name("dali", device))
    except _DaliFailure as exc:
        if backend == "auto":
            log.warning("%s: DALI failed (%s); decoding with PyAV", info.path, exc)
            return Decoded(_pyav_frames(info, start, count), decoder_name("pyav"))
        raise VideoError(info.path, f"DALI could not decode it: {exc}", "decode_error") from exc


def _check_file(path: Path) -> None:
    """Reject paths that are missing, not regular files or empty before FFmpeg sees them."""
    if not path.exists():
        raise VideoError(path, "file not found", "missing_file")
    if not path.is_file():
        raise VideoError(path, "is not a regular file", "not_video")
    if path.stat().st_size == 0:
        raise VideoError(path, "file is empty (0 bytes)", "empty_file")


def _open(path: Path) -> av.container.InputContainer:
    """Open for reading; undecodable metadata text must not fail the open."""
    import av

    return av.open(str(path), metadata_errors="replace")


@contextmanager
def _av_errors(path: Path, kind: str, what: str) -> Iterator[None]:
    """Turn a PyAV/FFmpeg error into a one-line VideoError of `kind`."""
    import av

    try:
        yield
    except av.FFmpegError as exc:
        raise VideoError(path, f"{what} ({getattr(exc, 'strerror', None) or exc})", kind) from None


def _header_frames(stream: av.video.stream.VideoStream, container: av.container.InputContainer) -> int | None:
    """Frame count stored in the header, else estimated from the stored duration and frame rate."""
    if stream.frames:
        return stream.frames
    rate = stream.average_rate or stream.guessed_rate
    if stream.duration is not None and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / 1_000_000  # FFmpeg's AV_TIME_BASE: container durations are in microseconds
    else:
        return None
    return round(seconds * rate) if rate else None


def _check_request(start: int, count: int, backend: str, device: str) -> None:
    """Validate the caller's options (a ConfigError, not a fault of the video)."""
    if start < 0 or count < 1:
        raise ConfigError(f"need start >= 0 and count >= 1, got start={start}, count={count}")
    if backend not in BACKENDS:
        raise ConfigError(f"unknown decode backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    _cuda_index(device)


def _cuda_index(device: str) -> int | None:
    """None for 'cpu', the GPU index for 'cuda' / 'cuda:N'."""
    if device == "cpu":
        return None
    name, _, index = device.partition(":")
    if name != "cuda" or not (index or "0").isdigit():
        raise ConfigError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'")
    return int(index or 0)


def _dali_codecs(device: str) -> frozenset[str]:
    return DALI_CPU_CODECS if _cuda_index(device) is None else DALI_GPU_CODECS


def _dali_mismatch(info: VideoInfo, device: str) -> str | None:
    """Why DALI's frames of this stream would differ from PyAV's (engine.io.colour), or None."""
    return dali_mismatch(info.pix_fmt, info.matrix, gpu=_cuda_index(device) is not None)


@functools.cache
def _warn_mismatch(where: str, why: str) -> None:
    """Warn once per process and reason that an explicitly chosen DALI will not match PyAV's frames."""
    log.warning("decoder 'dali' (%s) was chosen explicitly for streams with %s: its RGB frames will differ "
                "from PyAV's (and from --decoder auto, which would not pick DALI for them)", where, why)


@functools.cache
def dali_unavailable() -> str | None:
    """Why nvidia.dali does not import here, or None when it does (checked once; the import is heavy)."""
    try:
        import nvidia.dali  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _resolve_backend(info: VideoInfo, backend: str, device: str) -> str:
    """The backend that will decode this file; an explicit 'dali' must be able to."""
    if backend != "dali":
        return "pyav" if backend == "pyav" else choose_backend(info, device)
    why = dali_unavailable()
    if why is not None:
        raise ConfigError(f"decode backend 'dali' needs NVIDIA DALI, which does not import here ({why})")
    codecs = _dali_codecs(device)
    if info.codec not in codecs:
        where = "CPU" if _cuda_index(device) is None else "GPU"
        raise VideoError(info.path, f"DALI's {where} decoder cannot read {info.codec} (it reads "
                         f"{', '.join(sorted(codecs))}); use backend 'pyav' or 'auto'", "unsupported_codec")
    mismatch = _dali_mismatch(info, device)
    if mismatch is not None:
        _warn_mismatch("CPU" if _cuda_index(device) is None else "GPU", mismatch)
    return "dali"


def _shortage(info: VideoInfo, available: int, start: int, count: int, damaged: bool) -> VideoError:
    """The error for a file that ran out before frame start+count: truncated/corrupt, or just short."""
    if damaged or (info.frames is not None and available + 1 < info.frames):
        announced = f" of the {info.frames} its header announces" if info.frames else ""
        return VideoError(info.path, f"file ends after {available} frames{announced}: truncated or corrupt",
                          "decode_error")
    return VideoError(info.path, f"has {available} frames but the clip needs {start + count} "
                      f"(start {start} + {count} frames)", "too_few_frames")


def _pyav_frames(info: VideoInfo, start: int, count: int) -> np.ndarray:
    """Decode with PyAV only as far as frame start+count; any pixel format becomes rgb24."""
    frames: list[np.ndarray] = []
    seen, damaged = 0, [False]
    for seen, frame in enumerate(_pyav_decoded(info, damaged), start=1):
        if seen > start:
            frames.append(rgb_frame(frame))
        if seen == start + count:
            return np.stack(frames)
    raise _shortage(info, seen, start, count, damaged[0])


def _pyav_decoded(info: VideoInfo, damaged: list[bool]) -> Iterator[av.VideoFrame]:
    """Every decoded frame of the first video stream, in order; `damaged[0]` turns True at a corrupt packet."""
    with _av_errors(info.path, "decode_error", "decoding failed"), _open(info.path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for packet in container.demux(stream):
            damaged[0] |= packet.is_corrupt
            yield from packet.decode()


def stream_decoder(info: VideoInfo) -> str:
    """Provenance of the frames `stream_frames` gives for this file."""
    return frame_dir.decoder_name() if info.codec == frame_dir.CODEC else decoder_name("pyav")


def stream_frames(info: VideoInfo, start: int = 0) -> Iterator[np.ndarray]:
    """Frames from `start` to the end, one uint8 (H,W,3) RGB frame at a time, so a long video is never held whole:
    PyAV for a file, Pillow for a frame directory (decoder_name("pyav") or frames.decoder_name() made them)."""
    if start < 0:
        raise ConfigError(f"need start >= 0, got {start}")
    if info.codec == frame_dir.CODEC:
        for path in frame_dir.frame_files(info.path)[start:]:
            yield frame_dir.read_frame(path)
        return
    for seen, frame in enumerate(_pyav_decoded(info, [False])):
        if seen >= start:
            yield rgb_frame(frame)


def _intact_packets(info: VideoInfo, limit: int) -> tuple[int, bool]:
    """Count intact video packets up to `limit` by demuxing only, and whether a damaged one was seen.

    DALI trusts the container index and returns blank frames past a cut, so this checks length first.
    """
    intact, damaged = 0, False
    with _av_errors(info.path, "decode_error", "reading packets failed"), _open(info.path) as container:
        for packet in container.demux(container.streams.video[0]):
            damaged |= packet.is_corrupt
            intact += packet.size > 0 and not packet.is_corrupt
            if intact == limit:
                break
    return intact, damaged


def _dali_frames(info: VideoInfo, start: int, count: int, device: str) -> np.ndarray:
    """Decode with DALI's decoders.video from the file's bytes; raises _DaliFailure if DALI errs."""
    intact, damaged = _intact_packets(info, start + count)
    if intact < start + count:
        raise _shortage(info, intact, start, count, damaged)
    try:
        frames = _run_dali(np.fromfile(info.path, dtype=np.uint8), start, count, _cuda_index(device))
    except Exception as exc:  # DALI raises RuntimeError and others; its exception types are not documented
        raise _DaliFailure(_first_line(exc)) from exc
    if len(frames) < count:
        raise _shortage(info, start + len(frames), start, count, damaged)
    return frames


def _first_line(exc: Exception) -> str:
    """DALI messages span many lines (C++ context, stack); keep the first that says something."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _run_dali(encoded: np.ndarray, start: int, count: int, device_id: int | None) -> np.ndarray:
    """One-sample DALI pipeline: CPU decoder when device_id is None, else NVDEC ('mixed') on that GPU."""
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=1, num_threads=1, device_id=device_id)
    def pipeline():
        data = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        return fn.decoders.video(data, device="cpu" if device_id is None else "mixed",
                                 start_frame=start, sequence_length=count, pad_mode="none")

    pipe = pipeline()
    pipe.build()
    pipe.feed_input("encoded", [encoded])
    (batch,) = pipe.run()
    if device_id is not None:
        batch = batch.as_cpu()
    return np.array(batch[0])
