"""`aosa explain VIDEO --model SPEC`: one saliency map, written with a look-at-it overlay."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aosa.engine.io.preprocess import Clip
from aosa.engine.models.backends import use_backend
from aosa.engine.models.loading import LoadedModel, load_model
from aosa.engine.reporting.visualize import save_frame_grid, save_overlay_animation
from aosa.engine.runtime.explain import Explanation, explain_video, inference_fields
from aosa.jobs.common import add_backend_options, add_method_options, method_params, run_guarded
from aosa.kernels.methods import METHODS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa explain", description="Explain one video with one method.")
    parser.add_argument("video", type=Path, help="video file (any codec FFmpeg reads) or a directory of image_NNNNN.jpg frames")
    parser.add_argument("--model", required=True, help="probe3d, torchvision:r3d_18[=W.pth], or a .pt2/.pt file")
    parser.add_argument("--method", default="aosa", help=f"one of {', '.join(METHODS)}")
    parser.add_argument("--target", type=int, default=None, help="class to explain (default: the prediction)")
    parser.add_argument("--out", type=Path, default=Path("out"), help="output directory")
    parser.add_argument("--start", type=int, default=0, help="first frame of the clip")
    parser.add_argument("--decoder", default="auto", choices=("auto", "pyav", "dali"), help="video decoder")
    add_backend_options(parser)
    add_method_options(parser)
    return parser


def write_outputs(out: Path, video: Path, start: int, clip: Clip, model: LoadedModel, result: Explanation,
                  backend: str) -> dict:
    """saliency.npy, meta.json, overlay.gif and frames.png in `out`; returns the metadata."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "saliency.npy", result.saliency.astype(np.float32))
    prep = model.preprocessing
    meta = {
        "video": str(video), "start": start, "model": model.spec, "device": str(model.device), "backend": backend,
        "method": result.method, "params": result.params.to_dict(), "flow": result.flow,
        "target": result.target, "target_name": prep.class_name(result.target),
        "predicted": result.predicted, "predicted_name": prep.class_name(result.predicted),
        "score": result.score, "score_kind": result.params.score, "n_forward": result.n_forward,
        **inference_fields(result.inference),
        "saliency_shape": list(result.saliency.shape), "preprocessing": prep.to_dict() | {"classes": len(prep.classes)},
        "source": {"codec": clip.info.codec, "width": clip.info.width, "height": clip.info.height},
        "decoder": clip.decoder,
        "timings": result.timings, "versions": {"aosa-engine": version("aosa-engine"), "torch": torch.__version__},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    title = f"{result.method} | target {meta['target_name']} ({result.params.score} {result.score:.3f})"
    save_overlay_animation(clip.frames, result.saliency, out / "overlay.gif")
    save_frame_grid(clip.frames, result.saliency, out / "frames.png", title=title)
    return meta


def run(args: argparse.Namespace) -> int:
    params = method_params(args)
    model = load_model(args.model, args.device)
    backend = use_backend(model, args.backend, params.batch_size, args.engine_cache)
    with tqdm(desc=args.method, unit="step", dynamic_ncols=True, leave=False, disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        clip, result = explain_video(args.video, model, args.method, params, args.target, args.start, args.decoder,
                                     progress)
    meta = write_outputs(args.out, args.video, args.start, clip, model, result, backend)
    print(f"{args.method}: target {meta['target_name']} (score {result.score:.4f}), "
          f"{result.n_forward} clips through the model, {result.timings['total']:.2f} s -> {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("explain", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
