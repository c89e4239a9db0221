"""What one evaluation run is: model, methods with their options, and engine settings (stored in `runs`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from aosa.schemas.method_params import MethodParams, ParamsError


@dataclass(frozen=True)
class MethodSpec:
    """One entry of `--methods`: `key` as written (`aosa:top_k=0`), the method `name`, its full params."""

    key: str
    name: str
    params: MethodParams

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "params": self.params.to_dict()}


def parse_methods(text: str, base: MethodParams) -> list[MethodSpec]:
    """Parse `aosa,aosa:top_k=0,aosa-approx:relu=false`; each entry's options override `base`.

    Options of one entry are separated by `:` (`aosa:top_k=0:stride=4`). Keys must be unique.
    """
    specs: list[MethodSpec] = []
    for key in (part.strip() for part in text.split(",")):
        if not key:
            raise ParamsError(f"empty method in {text!r}")
        name, *options = key.split(":")
        overrides: dict[str, str] = {}
        for option in options:
            field, sep, value = option.partition("=")
            if not sep or not field:
                raise ParamsError(f"method option {option!r} in {key!r} must look like name=value")
            overrides[field.replace("-", "_")] = value
        if any(spec.key == key for spec in specs):
            raise ParamsError(f"method {key!r} is listed twice")
        specs.append(MethodSpec(key, name, base.with_overrides(overrides)))
    return specs


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers; stored as JSON in the `runs` table."""

    run_id: str
    manifest: str
    model: str
    methods: tuple[MethodSpec, ...]
    device: str = "auto"
    backend: str = "auto"
    engine_cache: str = "~/.cache/aosa/engines"
    decoder: str = "auto"
    decode_device: str = "cpu"
    model_actors: int = 2
    decode_actors: int = 1
    max_videos_in_flight: int = 4
    metric_batch_size: int = 16
    start: int = 0
    limit: int | None = None
    retry_errors: bool = False  # resume: compute the units stored as errors again

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["methods"] = [spec.to_dict() for spec in self.methods]
        return data
