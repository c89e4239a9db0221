"""A model wrapper that counts the clips it scores and the seconds of its forward passes (explain, workers,
benchmark all report both)."""

from __future__ import annotations

import time

import torch

from aosa.engine.models.loading import LoadedModel


class CountingModel:
    """Wraps a model to count the clips it scores and the seconds spent in its forward passes."""

    def __init__(self, model: LoadedModel) -> None:
        self.model, self.clips, self.seconds = model, 0, 0.0

    @property
    def module(self) -> torch.nn.Module:
        """The wrapped torch module (Grad-CAM hooks its layers; calls still go through this wrapper)."""
        return self.model.module

    @property
    def scoring_module(self) -> torch.nn.Module | None:
        """The wrapped model's scoring module (LoadedModel.scoring_module)."""
        return self.model.scoring_module

    @property
    def batch_format(self) -> torch.memory_format:
        """The wrapped model's batch layout (kernels.scoring.batch_format)."""
        return self.model.batch_format

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        start = time.perf_counter()
        logits = self.model(batch)
        if logits.is_cuda:
            torch.cuda.synchronize(logits.device)
        self.seconds += time.perf_counter() - start
        self.clips += batch.shape[0]
        return logits

    def add(self, clips: int, seconds: float) -> None:
        """Count clips scored for this model without calling it (incremental occlusion) and their seconds."""
        self.clips += clips
        self.seconds += seconds
