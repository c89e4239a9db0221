"""Occlusion methods: score drop of each mask, aggregated over the voxels it covers."""

from __future__ import annotations

from abc import abstractmethod

import torch

from kernels.fills import Fill, make_fill
from kernels.methods.base import ExplanationMethod
from kernels.occlusion import aggregate, occlusion_scores
from kernels.tubes import TubeSet
from schemas.method_params import MethodParams


class OcclusionMethod(ExplanationMethod):
    """Exact occlusion: d_i = f(x) - f(occluded_i), one forward pass per mask (and fill draw)."""

    @classmethod
    @abstractmethod
    def tubes(cls, params: MethodParams, inputs: torch.Tensor, flow: torch.Tensor | None) -> TubeSet:
        """The masks to occlude, as tube geometry; needs no model, so a scheduler can build it anywhere."""

    def make_fill(self, inputs: torch.Tensor) -> Fill:
        p = self.params
        return make_fill(self.fill, inputs, self.space, samples=p.samples, radius=p.radius, seed=p.seed)

    def attribute(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None = None) -> torch.Tensor:
        tubes = self.tubes(self.params, inputs, flow)
        score = self.scorer(target)
        with torch.no_grad():
            base = score(inputs.unsqueeze(0))[0]
        occluded = occlusion_scores(score, inputs, tubes, self.make_fill(inputs), batch_size=self.params.batch_size)
        return aggregate(tubes, base - occluded, self.params.aggregate)
