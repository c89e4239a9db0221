"""Parameters shared by every explanation method; each method reads the fields it needs."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

FILLS = ("mean", "zero", "blur", "conditional")
SCORES = ("prob", "logit")
AGGREGATES = ("coverage", "rise")
FLOWS = ("farneback", "dis", "farneback-cuda", "auto")
INCREMENTAL = ("auto", "on", "off")  # exact occlusion: incremental inference over the changed region, or dense
MAX_TOP_K = 8
MAX_AREAS = 8                            # STEP optimizes one mask per area in one batch


class ParamsError(ValueError):
    """A method parameter is unknown or out of range."""


@dataclass(frozen=True)
class MethodParams:
    """Options of `aosa explain` / `aosa evaluate` (DESIGN.md sections 4 and 10)."""

    stride: int = 8                      # anchor spacing s in pixels
    mask: int = 16                       # tube box side h = w in pixels
    top_k: int = 3                       # co-occurring partners per integrated mask (0 = single mask)
    fill: str | None = None              # None: the method's own default
    score: Literal["prob", "logit"] = "prob"
    relu: bool = True                    # AOSA-approx: keep only first-order score drops
    aggregate: Literal["coverage", "rise"] = "coverage"
    batch_size: int = 16                 # occluded clips per forward pass
    samples: int = 4                     # conditional fill: draws averaged by exact occlusion
    radius: int = 4                      # conditional fill: neighbour patch offsets within +-radius
    flow: str = "farneback"              # optical flow algorithm
    seed: int = 0                        # seeds every random draw of a method
    layer: str | None = None             # Grad-CAM layer, a dotted module path (None: the last Conv3d)
    noise: float = 0.15                  # SmoothGrad noise std as a fraction of the input's value range
    smooth_samples: int = 16             # SmoothGrad noisy copies averaged
    areas: str = "0.05,0.1,0.15,0.5"     # STEP: kept fractions of the clip, one mask each ("," or "/" between)
    iterations: int = 100                # STEP: optimizer steps
    learning_rate: float = 0.05          # STEP: Adam step size on the mask parameters
    smoothness: float = 300.0            # STEP: weight of the spatio-temporal smoothness (core) term
    incremental: str = "auto"            # AOSA / OSA: incremental inference (on), dense forwards (off), or auto

    def __post_init__(self) -> None:
        positive = {"stride": self.stride, "mask": self.mask, "batch_size": self.batch_size,
                    "samples": self.samples, "radius": self.radius, "smooth_samples": self.smooth_samples,
                    "iterations": self.iterations}
        for name, value in positive.items():
            if value < 1:
                raise ParamsError(f"{name} must be at least 1, got {value}")
        if not 0 <= self.top_k <= MAX_TOP_K:
            raise ParamsError(f"top_k must be between 0 and {MAX_TOP_K}, got {self.top_k} (mask sums use "
                              "inclusion-exclusion over the 2^(K+1) - 1 overlaps of a group's tubes)")
        if not 0 <= self.noise < math.inf:
            raise ParamsError(f"noise must be a finite number at least 0, got {self.noise}")
        if not 0 < self.learning_rate < math.inf:
            raise ParamsError(f"learning_rate must be a finite number above 0, got {self.learning_rate}")
        if not 0 <= self.smoothness < math.inf:
            raise ParamsError(f"smoothness must be a finite number at least 0, got {self.smoothness}")
        parse_areas(self.areas)
        for name, value, allowed in (("fill", self.fill, FILLS), ("score", self.score, SCORES),
                                     ("aggregate", self.aggregate, AGGREGATES), ("flow", self.flow, FLOWS),
                                     ("incremental", self.incremental, INCREMENTAL)):
            if value is not None and value not in allowed:
                raise ParamsError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")

    @property
    def area_values(self) -> tuple[float, ...]:
        return parse_areas(self.areas)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, str]) -> MethodParams:
        """Copy with fields replaced from strings (`top_k=0`, `relu=false`), converted to each field's type."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        values: dict[str, Any] = {}
        for name, text in overrides.items():
            if name not in fields:
                raise ParamsError(f"unknown method option {name!r}; known: {', '.join(sorted(fields))}")
            current = getattr(self, name)
            values[name] = _convert(name, text, current if current is not None else "")
        return dataclasses.replace(self, **values)


def parse_areas(text: str) -> tuple[float, ...]:
    """STEP's target areas from "0.05,0.1" (or "0.05/0.1", which fits inside `--methods step:areas=...`)."""
    try:
        values = tuple(float(part) for part in text.replace("/", ",").split(","))
    except ValueError:
        raise ParamsError(f"areas must be numbers separated by ',' or '/', got {text!r}") from None
    if len(values) > MAX_AREAS:
        raise ParamsError(f"areas must list at most {MAX_AREAS} fractions, got {len(values)} in {text!r}")
    if not all(0 < value < 1 for value in values):
        raise ParamsError(f"areas must be fractions strictly between 0 and 1, got {text!r}")
    return values


def _convert(name: str, text: str, like: Any) -> Any:
    """Parse `text` to the type of `like`."""
    if isinstance(like, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ParamsError(f"{name} must be true or false, got {text!r}")
    if isinstance(like, int):
        try:
            return int(text)
        except ValueError:
            raise ParamsError(f"{name} must be an integer, got {text!r}") from None
    if isinstance(like, float):
        try:
            return float(text)
        except ValueError:
            raise ParamsError(f"{name} must be a number, got {text!r}") from None
    return text
