"""`aosa figure --store DIR --run-id ID --videos A,B --methods aosa,osa,gradcam [--frames 0,5,10,15] --out F.pdf`:
the paper's figure of a run's maps, frames in columns and methods in rows over each video's frames, with a colour
bar, as PDF or PNG (by the suffix of --out). The frames are the clip the model saw, decoded as the run decoded
it (the stored preview where the video is gone; the maps alone where there is neither).

    python -m aosa.jobs.figure --store results --run-id demo --videos plain-0-00000 --methods aosa,osa --out fig.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aosa.engine.errors import ConfigError
from aosa.engine.reporting.figure import FORMATS, figure_bytes, frame_indices
from aosa.engine.reporting.video_maps import figure_videos
from aosa.engine.store.paths import write_atomic
from aosa.jobs.common import open_store, run_guarded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa figure", description="A figure of a run's maps over their frames.")
    parser.add_argument("--store", type=Path, required=True, help="result store directory")
    parser.add_argument("--run-id", required=True, help="the run whose maps to draw")
    parser.add_argument("--videos", required=True, help="video ids, comma-separated: one block of rows each")
    parser.add_argument("--methods", required=True, help="method keys, comma-separated: one row each")
    parser.add_argument("--frames", default=None, help="frame indices, comma-separated (default: 4 evenly spaced)")
    parser.add_argument("--model", default=None, help="the model, where the run evaluated the videos on several")
    parser.add_argument("--out", type=Path, required=True, help="the figure: FILE.pdf or FILE.png")
    return parser


def names(text: str, what: str) -> list[str]:
    """A comma-separated list of names, none empty."""
    items = [item.strip() for item in text.split(",")]
    if not all(items):
        raise ConfigError(f"--{what} has an empty entry: {text!r}")
    return items


def run(args: argparse.Namespace) -> int:
    fmt = args.out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise ConfigError(f"--out must end in .pdf or .png, got {args.out}")
    videos = figure_videos(open_store(args.store), args.run_id, names(args.videos, "videos"),
                           names(args.methods, "methods"), args.model)
    frames = frame_indices(args.frames, min(len(saliency) for video in videos for _, saliency in video.maps))
    data = figure_bytes(videos, frames, fmt)
    write_atomic(args.out, lambda file: file.write(data))
    print(f"figure: {args.out} ({len(videos)} video(s), {len(videos[0].maps)} method(s), frames "
          f"{','.join(map(str, frames))})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("figure", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
