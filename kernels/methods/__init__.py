"""Every explanation method, selectable by name, all with one call shape (see `base.ExplanationMethod`)."""

from __future__ import annotations

from kernels.methods.aosa import AOSA
from kernels.methods.aosa_approx import AOSAApprox
from kernels.methods.base import ExplanationMethod
from kernels.methods.gradients import GradCAM, GradientSaliency, SmoothGrad
from kernels.methods.osa import OSA
from kernels.methods.random_map import RandomMap
from kernels.methods.rollout import AttentionRollout
from kernels.methods.step import STEP

METHODS: dict[str, type[ExplanationMethod]] = {
    cls.name: cls
    for cls in (AOSA, AOSAApprox, OSA, GradCAM, SmoothGrad, GradientSaliency, RandomMap, AttentionRollout, STEP)}


def get_method(name: str) -> type[ExplanationMethod]:
    """The method class called `name`; ValueError listing the known names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None
