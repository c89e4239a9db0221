"""The reference forward pass: a model's own speed where it runs, which the nightly divides map times by."""

from __future__ import annotations

import statistics
import time

import torch

from engine.models.loading import LoadedModel

REFERENCE_REPEATS = 20


def forward_seconds(model: LoadedModel, repeats: int = REFERENCE_REPEATS) -> float:
    """Median seconds of one forward pass of a fixed clip (batch of one) on `model`, after one warm-up pass."""
    prep = model.preprocessing
    clip = torch.randn((1, 3, prep.frames, *prep.size), generator=torch.Generator().manual_seed(0))
    seconds = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            began = time.perf_counter()
            model(clip)
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
            seconds.append(time.perf_counter() - began)
    return statistics.median(seconds[1:])
