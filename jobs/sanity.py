"""`aosa sanity`: cascade randomization (Adebayo et al.) of each method's maps, the paper's Fig. 8.

Layers of the model are re-initialized from the logits down, cumulatively; after each step every
method's map is recomputed and compared with the original by Spearman rank correlation. A method that
depends on the model's parameters falls towards 0. Writes `sanity.csv` (per video, method and step)
and `sanity.png` (mean over videos).
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.errors import ConfigError
from aosa.engine.io.flow import compute_flow, resolve_method
from aosa.engine.io.preprocess import load_clip
from aosa.engine.models.loading import LoadedModel, load_model
from aosa.engine.reporting.visualize import save_sanity_plot
from aosa.engine.runtime.explain import choose_target
from aosa.jobs.common import add_method_options, method_params, run_guarded
from aosa.kernels.methods import get_method
from aosa.kernels.metrics import cascade_randomization
from aosa.kernels.space import InputSpace
from aosa.schemas.run_config import MethodSpec, parse_methods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa sanity", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True, help="videos (CSV or Parquet manifest)")
    parser.add_argument("--model", required=True, help="a zoo model SPEC (its layers are re-initialized)")
    parser.add_argument("--methods", default="aosa,aosa-approx", help="comma-separated method keys")
    parser.add_argument("--limit", type=int, default=4, help="first N videos of the manifest")
    parser.add_argument("--out", type=Path, default=Path("out/sanity"), help="output directory")
    parser.add_argument("--device", default="auto")
    add_method_options(parser)
    return parser


def method_correlations(model: LoadedModel, clip: torch.Tensor, flow: torch.Tensor, target: int,
                        spec: MethodSpec, seed: int) -> list[tuple[str, float]]:
    """Cascade randomization of one method's map of one clip."""
    method = get_method(spec.name)
    space = InputSpace(mean=model.preprocessing.mean, std=model.preprocessing.std)
    inputs = clip.to(model.device)

    def explain(module: torch.nn.Module) -> torch.Tensor:
        return method(module.eval(), spec.params, space).attribute(inputs, target, flow)

    return cascade_randomization(model.module, explain, seed=seed)


def run(args: argparse.Namespace) -> int:
    base = method_params(args)
    specs = parse_methods(args.methods, base)
    model = load_model(args.model, args.device)
    if not any(True for _ in model.module.parameters()):
        raise ConfigError(f"{args.model}: the model exposes no parameters to randomize")
    rows = read_manifest(args.manifest)[: args.limit]
    records = []
    for row in rows:
        clip = load_clip(row.path, model.preprocessing)
        flow = compute_flow(clip.frames, resolve_method(base.flow))
        target, _, _ = choose_target(model, clip.tensor.to(model.device), row.label, base.score)
        for spec in specs:
            for step, (layer, rho) in enumerate(method_correlations(model, clip.tensor, flow, target, spec, base.seed)):
                records.append({"video_id": row.video_id, "method": spec.key, "step": step + 1, "layer": layer,
                                "spearman": rho})
        print(f"{row.video_id}: done", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "sanity.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["video_id", "method", "step", "layer", "spearman"])
        writer.writeheader()
        writer.writerows(records)
    curves = mean_curves(records)
    save_sanity_plot(curves, args.out / "sanity.png", title=f"cascade randomization of {args.model}, "
                                                            f"{len(rows)} videos")
    for method, points in curves.items():
        print(f"{method}: " + ", ".join(f"{layer} {value:+.3f} +-{half:.3f}" for layer, value, half in points))
    return 0


def mean_curves(records: list[dict]) -> dict[str, list[tuple[str, float, float]]]:
    """Per method, (layer, mean Spearman over videos, half-width of its 95% interval: 1.96 standard errors, 0 for
    one video) in randomization order."""
    curves: dict[str, list[tuple[str, float, float]]] = {}
    for method in dict.fromkeys(record["method"] for record in records):
        mine = [record for record in records if record["method"] == method]
        layers = list(dict.fromkeys((record["step"], record["layer"]) for record in mine))
        values = [np.array([r["spearman"] for r in mine if r["step"] == step]) for step, _ in layers]
        curves[method] = [(layer, float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1
                           else 0.0) for (_, layer), v in zip(layers, values)]
    return curves


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("sanity", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
