"""The random baseline: a seeded uniform map, the floor every explanation method must beat."""

from __future__ import annotations

import torch

from aosa.kernels.methods.base import ExplanationMethod


class RandomMap(ExplanationMethod):
    """Uniform [0, 1) values per voxel from `params.seed`, drawn on the CPU so every device gives the same map."""

    name = "random"

    def attribute(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.params.seed)
        return torch.rand(tuple(inputs.shape[1:]), generator=generator, dtype=torch.float32).to(inputs.device)
