"""Means with 95% intervals (1.96 standard errors), the uncertainty every per-video comparison is reported with."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def mean_interval(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, half-width of its 95% interval, count) of the finite values; NaN mean when there are none, a zero
    half-width for one."""
    finite = np.array([v for v in values if np.isfinite(v)], dtype=np.float64)
    if not len(finite):
        return float("nan"), float("nan"), 0
    half = 1.96 * finite.std(ddof=1) / np.sqrt(len(finite)) if len(finite) > 1 else 0.0
    return float(finite.mean()), float(half), len(finite)


def interval(values: Iterable[float], digits: int = 3) -> str:
    """`mean +-half (n=N)`, or `-` when no value is finite."""
    mean, half, count = mean_interval(values)
    return "-" if not count else f"{mean:.{digits}f} +-{half:.{digits}f} (n={count})"
