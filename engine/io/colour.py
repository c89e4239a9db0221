"""The one YUV -> RGB conversion every decode backend must produce (DESIGN.md section 7, issue 15).

The conversion: the stream's own colour matrix and range as FFmpeg reads them (an unspecified matrix is
BT.601, as in swscale), chroma upsampled by swscale's bilinear filter with full horizontal chroma
interpolation and accurate rounding. That is exactly the swscale call DALI's CPU decoder makes
(SWS_BILINEAR | SWS_FULL_CHR_H_INT | SWS_ACCURATE_RND), so PyAV and DALI agree to the bit wherever DALI
reads the same matrix; DALI never reads the stream's matrix (it always uses BT.601), so a stream tagged
with another matrix is one DALI cannot match (`dali_mismatch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av

# swscale's SWS_BILINEAR | SWS_FULL_CHR_H_INT | SWS_ACCURATE_RND (av.video.reformatter.Interpolation; spelled out so
# that frame directories and DALI decode without PyAV imported)
SWS_FLAGS = 0x2 | 0x2000 | 0x40000

# AVColorSpace / AVColorRange codes (libavutil/pixfmt.h) by name, for probes and messages.
MATRICES = {0: "rgb", 1: "bt709", 2: "unspecified", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
            8: "ycgco", 9: "bt2020nc", 10: "bt2020c"}
RANGES = {0: "unspecified", 1: "tv", 2: "pc"}
# Matrices swscale converts with BT.601 coefficients, which is all DALI ever uses.
BT601_MATRICES = frozenset({"unspecified", "bt470bg", "smpte170m"})
# 8-bit planar YUV layouts whose conversion DALI's CPU decoder was measured to match bit for bit.
DALI_CPU_PIX_FMTS = frozenset({"yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"})
# DALI's GPU path converts NVDEC's NV12 output (4:2:0) only.
DALI_GPU_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})


def rgb_frame(frame: av.VideoFrame) -> np.ndarray:
    """A decoded frame as uint8 (H,W,3) RGB by the one conversion (its own matrix and range)."""
    return frame.to_ndarray(format="rgb24", interpolation=SWS_FLAGS)


def matrix_name(code: int | None) -> str | None:
    """The AVColorSpace name of `code` ('bt709', 'unspecified', ...), None when unknown."""
    return None if code is None else MATRICES.get(int(code), f"code {int(code)}")


def range_name(code: int | None) -> str | None:
    """The AVColorRange name of `code` ('tv' limited, 'pc' full, 'unspecified'), None when unknown."""
    return None if code is None else RANGES.get(int(code), f"code {int(code)}")


def dali_mismatch(pix_fmt: str | None, matrix: str | None, gpu: bool) -> str | None:
    """Why DALI's RGB frames would differ from the one conversion for this stream; None when they match.

    DALI converts with BT.601 whatever the stream says, and its GPU path handles 4:2:0 only.
    """
    allowed = DALI_GPU_PIX_FMTS if gpu else DALI_CPU_PIX_FMTS
    if pix_fmt not in allowed:
        return f"pixel format {pix_fmt} (DALI's {'GPU' if gpu else 'CPU'} path matches only {', '.join(sorted(allowed))})"
    if matrix not in BT601_MATRICES:
        return f"colour matrix {matrix} (DALI always converts with BT.601)"
    return None
