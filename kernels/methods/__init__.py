"""Every explanation method, selectable by name, all with one call shape (see `base.ExplanationMethod`)."""

from __future__ import annotations

from aosa.kernels.methods.aosa import AOSA
from aosa.kernels.methods.aosa_approx import AOSAApprox
from aosa.kernels.methods.base import ExplanationMethod
from aosa.kernels.methods.gradients import GradCAM, GradientSaliency, SmoothGrad
from aosa.kernels.methods.osa import OSA
from aosa.kernels.methods.random_map import RandomMap
from aosa.kernels.methods.rollout import AttentionRollout
from aosa.kernels.methods.step import STEP

METHODS: dict[str, type[ExplanationMethod]] = {
    cls.name: cls
    for cls in (AOSA, AOSAApprox, OSA, GradCAM, SmoothGrad, GradientSaliency, RandomMap, AttentionRollout, STEP)}


def get_method(name: str) -> type[ExplanationMethod]:
    """The method class called `name`; ValueError listing the known names otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(sorted(METHODS))}") from None
