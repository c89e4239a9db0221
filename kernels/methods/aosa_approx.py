"""AOSA-approx: first-order Taylor estimate of each tube mask's score drop, from one backward pass."""

from __future__ import annotations

import time

import torch

from aosa.kernels.fills import make_fill
from aosa.kernels.methods.aosa import adaptive_tubes
from aosa.kernels.methods.base import ExplanationMethod
from aosa.kernels.occlusion import aggregate


class AOSAApprox(ExplanationMethod):
    """S_m = sum over occluded elements e of ReLU(-J_e (mu_e - x_e)), J = df/dx at x (signed with relu=False)."""

    name = "aosa-approx"
    needs_flow = True
    default_fill = "conditional"

    def attribute(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        began = time.perf_counter()
        tubes = adaptive_tubes(self.require_flow(flow), p)
        expected = make_fill(self.fill, inputs, self.space, samples=1, radius=p.radius, seed=p.seed).expected
        self.record_masks(began, len(tubes))
        x = inputs.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            (gradient,) = torch.autograd.grad(self.scorer(target)(x.unsqueeze(0))[0], x)
        drop = -gradient * (expected - inputs.detach())
        if p.relu:
            drop = drop.clamp_min(0)
        return aggregate(tubes, tubes.sums(drop.sum(dim=0)), p.aggregate)
