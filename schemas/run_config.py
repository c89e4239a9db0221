"""What one evaluation run is: model, methods with their options, and engine settings (stored in `runs`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
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
    clips: str = "first"  # which clips a unit explains: the first, or every window of the video (check_clips)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["methods"] = [spec.to_dict() for spec in self.methods]
        return data


# What a stored unit's numbers depend on beyond its method's params: a resume must keep them (`config_changes`).
RESULT_FIELDS = ("start", "decoder", "decode_device", "device", "backend", "clips")
# Method params that choose how a map is computed, not what it is: a resume may change them.
EXECUTION_PARAMS = ("batch_size", "incremental")


def check_clips(text: str) -> str:
    """`first` (the clip from --start), `all` (every window of the video, a hop of half a clip) or `every:HOP`
    (every window, HOP frames apart, HOP >= 1); ParamsError otherwise. Whether HOP fits the model's clip length is
    known once the model is loaded."""
    mode, _, hop = text.partition(":")
    if (mode in ("first", "all") and not hop) or (mode == "every" and hop.isdigit() and int(hop) >= 1):
        return text
    raise ParamsError(f"--clips takes first, all or every:HOP with HOP a whole number of frames >= 1, got {text!r}")


def config_changes(stored: Sequence[Mapping[str, Any]], given: RunConfig) -> list[str]:
    """What `given` changes in the run whose stored configs (oldest first) are `stored`, for its model: the
    RESULT_FIELDS of that model's latest config, and the params of each method key a config of the model used
    ('start 0 -> 8', 'aosa: stride 8 -> 16'); empty for a new run or a model the run has not stored (its units
    have keys of their own: one run may hold several models, as the main job's two evidence families). Other
    options (actors, in flight, limit, ...) may change."""
    runs = [config for config in stored if config.get("model") == given.model and "methods" in config]
    if not runs:  # a nightly's own rows hold no run config
        return []
    defaults, now = RunConfig("", "", "", ()).to_dict(), given.to_dict()
    changes = [f"{name} {runs[-1].get(name, defaults[name])!r} -> {now[name]!r}" for name in RESULT_FIELDS
               if runs[-1].get(name, defaults[name]) != now[name]]
    before = {spec["key"]: spec["params"] for config in runs for spec in config["methods"]}
    base = MethodParams().to_dict()
    for spec in given.methods:
        if spec.key in before:
            old = {**base, **before[spec.key]}
            params = [f"{name} {old[name]!r} -> {value!r}" for name, value in spec.params.to_dict().items()
                      if name not in EXECUTION_PARAMS and old[name] != value]
            changes += [f"{spec.key}: {', '.join(params)}"] if params else []
    return changes
