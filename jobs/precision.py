"""`aosa precision`: what each backend's precision does to maps, measured against fp32 on a manifest's videos.

For every video the fp32 map (backend `eager`) and, for the same target, each backend's map; per backend the
rank correlation of the two maps (Spearman over all voxels) and the change in over-all (insertion - deletion AUC)
and in S-PT. Every map is scored by the fp32 model, so a change comes from the map alone. Means with 95%
intervals over the videos; seconds per map leave out each backend's first map (warm-up, compilation).

    aosa precision --manifest out/motion/manifest.csv --model probe:motion --backends eager-bf16,eager-fp16
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.errors import ConfigError
from aosa.engine.io.flow import compute_flow, resolve_method
from aosa.engine.io.preprocess import load_clip, model_boxes
from aosa.engine.models.backends import BACKENDS, describe_device, use_backend
from aosa.engine.models.loading import LoadedModel, load_model
from aosa.engine.models.timing import timed
from aosa.engine.reporting.intervals import interval, mean_interval
from aosa.engine.runtime.explain import choose_target
from aosa.jobs.common import add_method_options, method_params, run_guarded
from aosa.kernels.methods import get_method
from aosa.kernels.metrics import faithfulness, pointing_game, spearman
from aosa.kernels.scoring import ScoreFunction
from aosa.kernels.space import InputSpace
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams

REFERENCE = "eager"  # fp32: what every other backend's maps are compared with
MEASURES = ("correlation", "overall", "spt", "seconds")
DIGITS = {"correlation": 4, "overall": 3, "spt": 3}  # correlations near 1 need the fourth digit


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa precision", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True, help="videos (CSV or Parquet manifest)")
    parser.add_argument("--model", required=True, help="model SPEC")
    parser.add_argument("--backends", default="eager-bf16", help="comma-separated backends to compare with fp32")
    parser.add_argument("--method", default="aosa", help="explanation method (default: aosa)")
    parser.add_argument("--limit", type=int, default=50, help="first N videos of the manifest")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--engine-cache", type=Path, default=Path.home() / ".cache" / "aosa" / "engines")
    parser.add_argument("--json", type=Path, default=None, help="also write every per-video value here")
    add_method_options(parser)
    return parser


def load_backends(spec: str, device: str, names: list[str], batch_size: int, cache: Path) -> dict[str, LoadedModel]:
    """One loaded model per backend (the fp32 reference first), each with its own precision."""
    models = {}
    for name in [REFERENCE, *names]:
        models[name] = load_model(spec, device)
        use_backend(models[name], name, batch_size, cache)
    return models


def compare_video(row: ManifestRow, models: dict[str, LoadedModel], method: str,
                  params: MethodParams) -> dict[str, dict[str, float]]:
    """Per backend: correlation with the fp32 map, change of over-all and S-PT, seconds of its map."""
    reference = models[REFERENCE]
    clip = load_clip(row.path, reference.preprocessing)
    inputs = clip.tensor.to(reference.device)
    boxes = model_boxes(row, clip.geometry, reference.preprocessing.frames)
    explainer = get_method(method)
    flow = compute_flow(clip.frames, resolve_method(params.flow)) if explainer.needs_flow else None
    target = choose_target(reference, inputs, row.label, params.score)[0]
    score = ScoreFunction(reference, target, "prob")
    space = InputSpace(mean=reference.preprocessing.mean, std=reference.preprocessing.std)
    found = {}
    for name, model in models.items():
        seconds, saliency = timed(lambda model=model: explainer(model, params, space).attribute(inputs, target, flow),
                                  model.device)
        found[name] = (saliency.float(), seconds,
                       faithfulness(score, inputs, saliency.float(), batch_size=params.batch_size).overall,
                       pointing_game(saliency.float(), boxes).rate if boxes else float("nan"))
    base, _, overall, spt = found[REFERENCE]
    return {name: {"correlation": spearman(saliency, base), "overall": value - overall, "spt": rate - spt,
                   "seconds": seconds} for name, (saliency, seconds, value, rate) in found.items()}


def summary(per_video: list[dict[str, dict[str, float]]], name: str) -> dict[str, Any]:
    """Means with 95% intervals of one backend's measures; median seconds after its first (warm-up) map."""
    values = {measure: [video[name][measure] for video in per_video] for measure in MEASURES}
    timed = values["seconds"][1:] or values["seconds"]
    return {**{measure: mean_interval(values[measure]) for measure in DIGITS},
            "seconds": statistics.median(timed), "text": {measure: interval(values[measure], digits)
                                                         for measure, digits in DIGITS.items()}}


def run(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(name.strip() for name in args.backends.split(",") if name.strip()))
    unknown = [name for name in names if name not in BACKENDS or name in ("auto", REFERENCE)]
    if not names or unknown:
        raise ConfigError(f"--backends: give backends other than {REFERENCE!r} from {', '.join(BACKENDS[2:])}; "
                          f"got {args.backends!r}")
    params = get_method(args.method).resolve(method_params(args))
    rows = read_manifest(args.manifest)[: args.limit]
    if not rows:
        raise ConfigError(f"{args.manifest}: no videos")
    models = load_backends(args.model, args.device, names, params.batch_size, args.engine_cache)
    per_video = []
    for row in rows:
        per_video.append(compare_video(row, models, args.method, params))
        print(f"{row.video_id}: " + ", ".join(f"{name} r={per_video[-1][name]['correlation']:.4f}"
                                              for name in names), file=sys.stderr)
    results = {name: summary(per_video, name) for name in [REFERENCE, *names]}
    device = describe_device(models[REFERENCE].device)
    print(f"{args.model}, {args.method}, {len(rows)} videos on {device}: maps against fp32 ({REFERENCE}); "
          "over-all and S-PT scored by the fp32 model; means +- 95% interval")
    print(f"{'backend':<14} {'rank correlation':<28} {'change of over-all':<28} {'change of S-PT':<28} s/map")
    for name, result in results.items():
        text = result["text"]
        print(f"{name:<14} {text['correlation']:<28} {text['overall']:<28} {text['spt']:<28} "
              f"{result['seconds']:.4f}")
    if args.json is not None:
        args.json.write_text(json.dumps({"model": args.model, "method": args.method, "device": device,
                                         "videos": [row.video_id for row in rows], "per_video": per_video,
                                         "summary": {k: {m: v for m, v in r.items() if m != "text"}
                                                     for k, r in results.items()}}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("precision", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
