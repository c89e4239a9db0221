"""The precision a model's passes run in: fp32 (exact), TF32 tensor cores (CUDA), or bf16 / fp16 autocast.

Applied per call (precision_context), so models of several precisions can share a process although the TF32 flags
themselves are process-wide.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}  # precisions that run under torch.autocast


@contextmanager
def precision_context(precision: str, device: torch.device) -> Iterator[None]:
    """Passes inside run in `precision` on `device`: TF32 flags as it asks (restored after), autocast for bf16/fp16.
    Per call, so that models of several precisions can share a process (the flags themselves are process-wide)."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    if device.type == "cuda":
        set_tf32(precision == "tf32")
    try:
        if precision in AUTOCAST:
            with torch.autocast(device.type, dtype=AUTOCAST[precision]):
                yield
        else:
            yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def set_tf32(enabled: bool) -> None:
    """TF32 tensor cores for CUDA convolutions and matrix products, on or off (process-wide torch flags)."""
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
