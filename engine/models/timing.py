"""The reference forward pass: a model's own speed where it runs, which the nightly divides map times by."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import torch

from aosa.engine.models.loading import LoadedModel

REFERENCE_REPEATS = 20
SAMPLE_INTERVAL = 1.0  # seconds between two reference samples taken while a worker scores maps


Result = TypeVar("Result")


def timed(run: Callable[[], Result], device: torch.device) -> tuple[float, Result]:
    """Seconds of one call of `run` and what it returned, the device's queued work included (CUDA synchronized)."""
    began = time.perf_counter()
    result = run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - began, result


def _timed_passes(model: LoadedModel, count: int) -> list[float]:
    prep = model.preprocessing
    clip = torch.randn((1, 3, prep.frames, *prep.size), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return [timed(lambda: model(clip), model.device)[0] for _ in range(count)]


class ReferenceSampler:
    """Times one reference forward pass now and then while a worker scores maps (at most once a second), so
    the speed reference sees the threads and the load the maps ran under, not an idle machine."""

    def __init__(self, model: LoadedModel, interval: float = SAMPLE_INTERVAL) -> None:
        self.model, self.interval = model, interval
        self.samples: list[float] = []
        self._last = -float("inf")
        self._warm = False

    def maybe_sample(self) -> None:
        """Take a sample when the last one is older than the interval."""
        if time.monotonic() - self._last >= self.interval:
            self._sample()

    def median(self, repeats: int = REFERENCE_REPEATS) -> float:
        """Median of the samples taken during the run, topped up to `repeats` samples now if it took fewer."""
        while len(self.samples) < repeats:
            self._sample()
        return statistics.median(self.samples)

    def _sample(self) -> None:
        """One timed forward pass (after a warm-up pass the first time)."""
        self.samples.append(_timed_passes(self.model, 1 if self._warm else 2)[-1])
        self._warm, self._last = True, time.monotonic()
