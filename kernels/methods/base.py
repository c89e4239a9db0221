"""The one call shape every explanation method shares: `Method(model, params, space).attribute(clip, target, flow)`."""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import torch

from aosa.kernels.scoring import Model, ScoreFunction
from aosa.kernels.space import InputSpace
from aosa.schemas.method_params import MethodParams


class ExplanationMethod(ABC):
    """A saliency method for a video classifier; `model` maps (B, C, T, H, W) to logits."""

    name: ClassVar[str]
    needs_flow: ClassVar[bool] = False   # whether attribute() needs the clip's optical flow
    default_fill: ClassVar[str] = "mean"
    progress: Callable[[int, int], None] | None = None  # set on an instance: long methods report (done, total)
    mask_seconds: float | None = None  # after attribute(): seconds building masks and fill, for methods with masks
    mask_count: int = 0

    def __init__(self, model: Model, params: MethodParams | None = None, space: InputSpace | None = None) -> None:
        self.model = model
        self.params = params or MethodParams()
        self.space = space or InputSpace()

    @classmethod
    def resolve(cls, params: MethodParams) -> MethodParams:
        """`params` with this method's default fill filled in: what it runs with and what gets recorded."""
        return params if params.fill is not None else dataclasses.replace(params, fill=cls.default_fill)

    @property
    def fill(self) -> str:
        return self.resolve(self.params).fill

    def scorer(self, target: int) -> ScoreFunction:
        return ScoreFunction(self.model, target, self.params.score)

    @abstractmethod
    def attribute(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None = None) -> torch.Tensor:
        """Saliency (T, H, W) float32 of a (C, T, H, W) clip for class `target`; higher = more important."""

    def record_masks(self, began: float, count: int) -> None:
        """Keep the seconds since `began` (perf_counter) spent building `count` masks and their fill, for a run's
        `masks` stage."""
        self.mask_seconds, self.mask_count = time.perf_counter() - began, count

    @classmethod
    def require_flow(cls, flow: torch.Tensor | None) -> torch.Tensor:
        if flow is None:
            raise ValueError(f"method {cls.name!r} needs the clip's optical flow (T-1, H, W, 2)")
        return flow
