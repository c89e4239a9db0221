"""`aosa explain VIDEO --model SPEC [--whole]`: one saliency map (of a clip, or of every window of a whole video,
stitched), written with a look-at-it overlay."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aosa.engine.errors import ConfigError
from aosa.engine.io.preprocess import Clip
from aosa.engine.models.backends import use_backend
from aosa.engine.models.loading import LoadedModel, load_model
from aosa.engine.reporting.overlay_video import frame_rate, save_overlay_video
from aosa.engine.reporting.timeline import save_timeline
from aosa.engine.reporting.visualize import save_frame_grid, save_overlay_animation
from aosa.engine.runtime.explain import Explanation, Progress, explain_video, inference_fields
from aosa.engine.runtime.whole import WholeExplanation, explain_whole_video
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
    parser.add_argument("--whole", action="store_true",
                        help="explain every window of the model's clip length over the whole video from --start, "
                             "stitched into one map, with the windows' probabilities and the temporal evidence curve")
    parser.add_argument("--hop", type=int, default=None,
                        help="--whole: frames between window starts, 1 to the clip length (default: half a clip)")
    add_backend_options(parser)
    add_method_options(parser)
    return parser


def common_meta(video: Path, start: int, clip: Clip, model: LoadedModel, result: Explanation | WholeExplanation,
                backend: str) -> dict:
    """What meta.json says of a map, a clip's or a whole video's."""
    prep = model.preprocessing
    return {
        "video": str(video), "start": start, "model": model.spec, "device": str(model.device), "backend": backend,
        "method": result.method, "params": result.params.to_dict(), "flow": result.flow,
        "target": result.target, "target_name": prep.class_name(result.target),
        "predicted": result.predicted, "predicted_name": prep.class_name(result.predicted),
        "score": result.score, "score_kind": result.params.score, "n_forward": result.n_forward,
        "saliency_shape": list(result.saliency.shape), "preprocessing": prep.to_dict() | {"classes": len(prep.classes)},
        "source": {"codec": clip.info.codec, "width": clip.info.width, "height": clip.info.height,
                   "fps": clip.info.fps},
        "decoder": clip.decoder,
        "timings": result.timings, "versions": {"aosa-engine": version("aosa-engine"), "torch": torch.__version__},
    }


def write_outputs(out: Path, video: Path, start: int, clip: Clip, model: LoadedModel, result: Explanation,
                  backend: str) -> dict:
    """saliency.npy, meta.json, overlay.gif and frames.png in `out`; returns the metadata."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "saliency.npy", result.saliency.astype(np.float32))
    meta = common_meta(video, start, clip, model, result, backend) | inference_fields(result.inference)
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    title = f"{result.method} | target {meta['target_name']} ({result.params.score} {result.score:.3f})"
    save_overlay_animation(clip.frames, result.saliency, out / "overlay.gif")
    save_frame_grid(clip.frames, result.saliency, out / "frames.png", title=title)
    return meta


def write_whole_outputs(out: Path, video: Path, start: int, clip: Clip, model: LoadedModel,
                        result: WholeExplanation, backend: str) -> dict:
    """saliency.npy (T_video, H, W), timeline.json, overlay.mp4 (the source's resolution and rate), timeline.png
    and meta.json (every window's timings) in `out`; returns the metadata."""
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "saliency.npy", result.saliency.astype(np.float32))
    (out / "timeline.json").write_text(json.dumps(result.timeline(), indent=2))
    began = time.perf_counter()
    save_overlay_video(clip.info, start, clip.geometry, result.saliency, out / "overlay.mp4")
    result.timings["overlay"] = time.perf_counter() - began
    title = (f"{result.method} | target {model.preprocessing.class_name(result.target)} (video "
             f"{result.params.score} {result.score:.3f}) | {len(result.windows)} windows, hop {result.hop}")
    save_timeline(clip.frames, result.saliency, result.timeline(), out / "timeline.png", title=title)
    meta = common_meta(video, start, clip, model, result, backend) | inference_fields(result.inference) | {
        "whole": {"frames": int(result.saliency.shape[0]), "clip": result.clip, "hop": result.hop,
                  "fps": float(frame_rate(clip.info)),
                  "windows": [{"start": w.start, "end": w.start + result.clip, "probability": w.probability,
                               "n_forward": w.n_forward, "timings": w.timings,
                               **inference_fields(w.inference)}
                              for w in result.windows]}}
    (out / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def explain(args: argparse.Namespace, model: LoadedModel,
            progress: Progress) -> tuple[Clip, Explanation | WholeExplanation]:
    """The clip's map, or with --whole every window's, stitched."""
    params = method_params(args)
    if not args.whole:
        if args.hop is not None:
            raise ConfigError("--hop applies to --whole only")
        return explain_video(args.video, model, args.method, params, args.target, args.start, args.decoder, progress)
    if args.decoder == "dali":
        raise ConfigError("--whole streams the video through PyAV (Pillow for frame directories); --decoder dali "
                          "decodes clips only")
    return explain_whole_video(args.video, model, args.method, params, args.target, args.hop, args.start, progress)


def run(args: argparse.Namespace) -> int:
    model = load_model(args.model, args.device)
    backend = use_backend(model, args.backend, args.batch_size, args.engine_cache)
    with tqdm(desc=args.method, unit="window" if args.whole else "step", dynamic_ncols=True, leave=False,
              disable=None) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        clip, result = explain(args, model, progress)
    write = write_whole_outputs if args.whole else write_outputs
    meta = write(args.out, args.video, args.start, clip, model, result, backend)
    windows = f"{len(result.windows)} windows, " if args.whole else ""
    print(f"{args.method}: target {meta['target_name']} (score {result.score:.4f}), {windows}"
          f"{result.n_forward} clips through the model, {result.timings['total']:.2f} s -> {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("explain", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
