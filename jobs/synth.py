"""`aosa synth --out DIR --videos N`: write the synthetic probe benchmark (videos + manifest.csv).

    aosa synth --out data/synth --videos 40 --seed 0 --codec vp9 --variant pan --task appearance
    aosa synth --out data/long --videos 100 --long 64-256 --task appearance   # evidence in a known segment
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aosa.engine.datasets.long_synthetic import write_long_benchmark
from aosa.engine.datasets.synthetic import FRAMES, TASKS, VARIANTS, write_benchmark
from aosa.engine.errors import ConfigError
from aosa.jobs.common import run_guarded

CODECS = {"h264": "libx264", "vp9": "libvpx-vp9", "frames": FRAMES}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa synth", description="Write the synthetic probe benchmark: "
                                     "moving-target videos with per-frame target boxes, and manifest.csv.")
    parser.add_argument("--task", choices=TASKS, default="motion",
                        help="evidence family: the class is the target's motion or its look (appearance)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (videos/ and manifest.csv)")
    parser.add_argument("--videos", type=int, required=True, help="number of videos (classes in turn)")
    parser.add_argument("--seed", type=int, default=0, help="seed; the same seed writes the same benchmark")
    parser.add_argument("--codec", choices=CODECS, default="h264", help="h264 (.mp4), vp9 (.webm) or frames (a directory of JPEG "
                        "frames per video, 3D-ResNets layout: readable without FFmpeg)")
    parser.add_argument("--variant", choices=VARIANTS, default="plain", help="scene variant")
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--size", type=int, default=112, help="frame side in pixels (even)")
    parser.add_argument("--long", metavar="FRAMES", default=None,
                        help="long videos of FRAMES frames, or of a length drawn from MIN-MAX (e.g. 64-256), whose "
                             "evidence lies only in a known segment, recorded in the manifest (plain variant)")
    return parser


def frame_range(text: str) -> tuple[int, int]:
    """`128` or `64-256` as the (min, max) frames of a long video."""
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise ConfigError(f"--long takes FRAMES or MIN-MAX frames (e.g. 64-256), got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    if args.long is not None:
        if args.variant != "plain":
            raise ConfigError(f"--long writes the plain variant only, got --variant {args.variant}")
        lengths = frame_range(args.long)
        manifest = write_long_benchmark(args.out, args.videos, args.seed, lengths, codec=CODECS[args.codec],
                                        size=args.size, task=args.task)
        print(f"wrote {args.videos} long {args.task} {args.codec} videos of {args.long} frames with their evidence "
              f"segments, {args.size}x{args.size}, to {args.out / 'videos'} and their manifest {manifest}")
        return 0
    manifest = write_benchmark(args.out, args.videos, args.seed, codec=CODECS[args.codec], variant=args.variant,
                               frames=args.frames, size=args.size, task=args.task)
    print(f"wrote {args.videos} {args.task} {args.variant} {args.codec} videos of {args.frames} frames, "
          f"{args.size}x{args.size}, to {args.out / 'videos'} and their manifest {manifest}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("synth", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
