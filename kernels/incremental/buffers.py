"""Scratch memory reused across the layers, plans, fill draws and clips of incremental passes.

A fresh tensor of many MiB costs a page fault per page on first touch on a CPU (the C allocator maps and unmaps
each one): measured here, writing a fresh 0.5 GiB buffer took 3-25x as long as writing a warm one, more than the
gathers and adds that fill it. The pool hands out views of buffers it keeps and takes one again once nothing
else holds its storage (the storage's use count), so a caller never returns anything by hand.
"""

from __future__ import annotations

import math

import torch

_use_count = getattr(torch._C, "_storage_Use_Count", None)  # private; without it the pool allocates fresh


def _idle(buffer: torch.Tensor) -> bool:
    """Nothing but the pool's own tensor holds the buffer's storage (2: that tensor and the probe's handle)."""
    return _use_count(buffer.untyped_storage()._cdata) <= 2


class BufferPool:
    """Flat buffers of one device; `take` returns a shaped view of the smallest idle one that fits, else of a new
    one (idle buffers too small for it are dropped, so the pool holds no more than was once in use at the same
    time plus the new one). Kept by whoever scores clip after clip (an occlusion method, a model worker) and used
    by one caller at a time."""

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []

    def take(self, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """An uninitialised tensor of `shape` (contiguous), backed by pooled memory."""
        need = math.prod(shape)
        if _use_count is None or need == 0:
            return torch.empty(shape, dtype=dtype, device=device)
        idle = [b for b in self._buffers if b.dtype == dtype and b.device == device and _idle(b)]
        fitting = [b for b in idle if b.numel() >= need]
        if fitting:
            buffer = min(fitting, key=torch.Tensor.numel)
        else:
            small = {id(b) for b in idle}
            self._buffers = [b for b in self._buffers if id(b) not in small]
            buffer = torch.empty(need, dtype=dtype, device=device)
            self._buffers.append(buffer)
        return buffer[:need].view(shape)

    @property
    def nbytes(self) -> int:
        """Bytes the pool holds, idle or lent."""
        return sum(b.numel() * b.element_size() for b in self._buffers)
