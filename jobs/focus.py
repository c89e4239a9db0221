"""`aosa focus`: where each method's map puts its mass, and where a max-pooled model's features peak.

For the first N videos of a boxed manifest it prints, per method, the share of the map's positive mass inside
the target boxes (the energy-based pointing game) with its 95% interval. For a model whose head pools globally
by max (AdaptiveMaxPool3d to one value per channel), it also prints the share of channels whose peak position
lies on the target: a gradient passes a max pool only at that position, so this share says how much of a plain
gradient map can land on the object at all. And it prints the target probability with the clip blurred as STEP
blurs it except inside the target's boxes in one frame, two, or all: how many frames of the target the model
needs, i.e. how much of the clip a mask that keeps the score must keep.

    aosa focus --manifest out/app200/manifest.csv --model probe:appearance --methods saliency,smoothgrad,aosa
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.errors import ConfigError
from aosa.engine.io.flow import compute_flow, resolve_method
from aosa.engine.io.preprocess import load_clip, model_boxes
from aosa.engine.models.loading import load_model
from aosa.engine.reporting.intervals import interval
from aosa.engine.runtime.explain import choose_target
from aosa.jobs.common import add_method_options, method_params, run_guarded
from aosa.kernels.methods import get_method
from aosa.kernels.methods.step import substrate
from aosa.kernels.metrics import box_energy, pointing_game
from aosa.kernels.metrics.pointing import Box, box_pixels
from aosa.kernels.scoring import ScoreFunction
from aosa.kernels.space import InputSpace
from aosa.schemas.run_config import parse_methods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa focus", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", type=Path, required=True, help="videos with boxes (CSV or Parquet manifest)")
    parser.add_argument("--model", required=True, help="model SPEC")
    parser.add_argument("--methods", default="saliency,smoothgrad", help="comma-separated method keys")
    parser.add_argument("--limit", type=int, default=50, help="first N videos of the manifest")
    parser.add_argument("--device", default="auto")
    add_method_options(parser)
    return parser


def peaks_on_target(module: nn.Module, clip: torch.Tensor, boxes: list[tuple[int, int, int, int, int]]) -> float:
    """Share of the channels of the global max pool's input whose (first) peak's receptive-field centre lies in a
    box of its frame; NaN for a model with no AdaptiveMaxPool3d to size 1."""
    pools = [m for m in module.modules() if isinstance(m, nn.AdaptiveMaxPool3d) and m.output_size in (1, (1, 1, 1))]
    if not pools:
        return float("nan")
    captured: list[torch.Tensor] = []
    handle = pools[-1].register_forward_hook(lambda _m, inputs, _out: captured.append(inputs[0].detach()))
    with torch.no_grad():
        module(clip.unsqueeze(0))
    handle.remove()
    features = captured[0][0]  # (C, T', H', W')
    (frames, height, width), (t_in, h_in, w_in) = features.shape[1:], clip.shape[1:]
    t, y, x = np.unravel_index(features.flatten(1).argmax(1).cpu().numpy(), (frames, height, width))
    centre_t, centre_y, centre_x = ((t + 0.5) * t_in / frames).astype(int), (y + 0.5) * h_in / height, (
        x + 0.5) * w_in / width
    inside = [any(f == ct and x0 <= cx < x1 and y0 <= cy < y1 for f, x0, y0, x1, y1 in boxes)
              for ct, cy, cx in zip(centre_t, centre_y, centre_x)]
    return float(np.mean(inside))


def kept_frame_sets(frames: int) -> dict[str, set[int]]:
    """The frames whose target boxes kept_target_scores keeps, by name."""
    return {"none": set(), f"frame {frames // 2}": {frames // 2},
            f"frames {frames // 4},{3 * frames // 4}": {frames // 4, 3 * frames // 4}, "all": set(range(frames))}


def kept_target_scores(score: ScoreFunction, clip: torch.Tensor, boxes: list[Box],
                       kept: dict[str, set[int]]) -> dict[str, float]:
    """Target score of the (C, T, H, W) clip blurred as STEP blurs it but inside the boxes of each set of frames in
    `kept`, and of the clip itself ("clip")."""
    blurred, (height, width) = substrate(clip), clip.shape[-2:]
    batch = [clip]
    for frames in kept.values():
        partial = blurred.clone()
        for box in boxes:
            pixels = box_pixels(box, height, width)
            if box[0] in frames and pixels is not None:
                x_lo, y_lo, x_hi, y_hi = pixels
                partial[:, box[0], y_lo:y_hi + 1, x_lo:x_hi + 1] = clip[:, box[0], y_lo:y_hi + 1, x_lo:x_hi + 1]
        batch.append(partial)
    with torch.no_grad():
        scores = score(torch.stack(batch)).tolist()
    return dict(zip(["clip", *kept], scores))


def run(args: argparse.Namespace) -> int:
    base = method_params(args)
    specs = parse_methods(args.methods, base)
    model = load_model(args.model, args.device)
    space = InputSpace(mean=model.preprocessing.mean, std=model.preprocessing.std)
    rows = [row for row in read_manifest(args.manifest) if row.boxes][: args.limit]
    if not rows:
        raise ConfigError(f"{args.manifest}: no video has boxes")
    energy: dict[str, list[float]] = {spec.key: [] for spec in specs}
    pointing: dict[str, list[float]] = {spec.key: [] for spec in specs}
    peaks = []
    kept = kept_frame_sets(model.preprocessing.frames)
    kept_scores: dict[str, list[float]] = {name: [] for name in ["clip", *kept]}
    needs_flow = any(get_method(spec.name).needs_flow for spec in specs)
    for row in rows:
        clip = load_clip(row.path, model.preprocessing)
        inputs = clip.tensor.to(model.device)
        boxes = model_boxes(row, clip.geometry, model.preprocessing.frames)
        flow = compute_flow(clip.frames, resolve_method(base.flow)) if needs_flow else None
        target, _, _ = choose_target(model, inputs, row.label, base.score)
        for spec in specs:
            saliency = get_method(spec.name)(model, spec.params, space).attribute(inputs, target, flow)
            energy[spec.key].append(box_energy(saliency, boxes))
            pointing[spec.key].append(pointing_game(saliency, boxes).rate)
        peaks.append(peaks_on_target(model.module, inputs, boxes))
        for name, value in kept_target_scores(ScoreFunction(model, target, base.score), inputs, boxes, kept).items():
            kept_scores[name].append(value)
        print(f"{row.video_id}: done", file=sys.stderr)
    print(f"{args.model}, {len(rows)} videos: share of each map's positive mass inside the target boxes, "
          f"and S-PT (share of boxed frames whose peak hits), per video")
    for key, values in energy.items():
        print(f"  {key:<28} mass {interval(values):<26} S-PT {interval(pointing[key])}")
    print(f"  channels of the global max pool peaking on the target: {interval(peaks)}")
    print(f"target {base.score}, the clip blurred as STEP blurs it except in the target's boxes of")
    for name, values in kept_scores.items():
        print(f"  {'(the clip itself)' if name == 'clip' else name:<28} {interval(values)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("focus", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
