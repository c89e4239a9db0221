"""Occlusion methods: score drop of each mask, aggregated over the voxels it covers."""

from __future__ import annotations

import time
from abc import abstractmethod

import torch

from aosa.kernels.fills import Fill, make_fill
from aosa.kernels.incremental import BufferPool, PlanGraphs, incremental_for
from aosa.kernels.methods.base import ExplanationMethod
from aosa.kernels.occlusion import Inference, aggregate, checked_scores
from aosa.kernels.scoring import Model, target_scores
from aosa.kernels.space import InputSpace
from aosa.kernels.tubes import TubeSet
from aosa.schemas.method_params import MethodParams


class OcclusionMethod(ExplanationMethod):
    """Exact occlusion: d_i = f(x) - f(occluded_i), one forward pass per mask (and fill draw).

    `params.incremental` ("auto", "on" or "off") picks incremental inference over each mask's changed region
    (kernels.incremental, the same scores within float tolerance, checked on a few masks per clip) or dense
    forwards. After attribute(), `inference` says which ran, why dense where incremental was tried, the largest
    difference checked, and how many occluded clips it scored without a call of the model (so callers counting
    the model's calls can count every clip). The instance keeps the incremental path's scratch memory for its
    next clip (BufferPool), and on a GPU its plans as CUDA graphs replayed for the next clips (PlanGraphs; None
    runs every plan op by op).
    """

    inference: Inference | None = None

    def __init__(self, model: Model, params: MethodParams | None = None, space: InputSpace | None = None) -> None:
        super().__init__(model, params, space)
        self.pool = BufferPool()
        self.graphs: PlanGraphs | None = PlanGraphs()

    @classmethod
    @abstractmethod
    def tubes(cls, params: MethodParams, inputs: torch.Tensor, flow: torch.Tensor | None) -> TubeSet:
        """The masks to occlude, as tube geometry; needs no model, so a scheduler can build it anywhere."""

    def make_fill(self, inputs: torch.Tensor) -> Fill:
        p = self.params
        return make_fill(self.fill, inputs, self.space, samples=p.samples, radius=p.radius, seed=p.seed)

    def attribute(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None = None) -> torch.Tensor:
        began = time.perf_counter()
        tubes, fill = self.tubes(self.params, inputs, flow), self.make_fill(inputs)
        self.record_masks(began, len(tubes))
        score = self.scorer(target)
        with torch.no_grad():
            logits = self.model(inputs.unsqueeze(0))
        base = target_scores(logits, target, score.kind)[0]
        fast, note = incremental_for(self.model, inputs, self.params.incremental, logits, self.pool,
                                     self.graphs)
        occluded, self.inference = checked_scores(score, inputs, tubes, fill, None, self.params.batch_size, fast, note)
        return aggregate(tubes, base - occluded, self.params.aggregate)
