"""`aosa manifest --from SOURCE ... --out FILE`: write a manifest from public dataset annotations."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aosa.engine.datasets.annotations import (HARA_SUBSETS, KINETICS_TEMPLATE, hara_split, kinetics_csv, ucf101_24_pyannot,
                                         ucf101_split, ucf101v2_gt)
from aosa.engine.datasets.manifests import write_manifest
from aosa.engine.errors import ConfigError
from aosa.jobs.common import run_guarded
from aosa.schemas.manifest import ManifestRow

SOURCES = ("ucf101", "ucf101-24", "ucf101v2", "kinetics", "hara")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa manifest", description="Turn dataset annotations into a manifest.")
    parser.add_argument("--from", dest="source", required=True, choices=SOURCES,
                        help="ucf101: split list; ucf101-24: pyannot.pkl; ucf101v2: UCF101v2-GT.pkl; "
                             "kinetics: label,youtube_id,time_start,time_end,split CSV; "
                             "hara: 3D-ResNets-PyTorch split JSON (ucf101_01.json, kinetics.json) over frame folders")
    parser.add_argument("--annotations", type=Path, required=True, help="the split list, .pkl, CSV or JSON file")
    parser.add_argument("--video-root", type=Path, help="folder the videos are under (all but hara)")
    parser.add_argument("--out", type=Path, required=True, help="manifest to write (.csv or .parquet)")
    parser.add_argument("--class-index", type=Path, help="ucf101: classInd.txt")
    parser.add_argument("--classes", type=Path,
                        help="ucf101v2, kinetics: class names one per line, in the model's order "
                             "(kinetics default: the CSV's names sorted)")
    parser.add_argument("--start", type=int, default=0, help="ucf101-24, ucf101v2: first frame of the clip")
    parser.add_argument("--frames", default=None,
                        help="hara: ROOT of the CLASS/VIDEO/image_NNNNN.jpg frame folders; "
                             "ucf101-24, ucf101v2: frames in the clip (default 16)")
    parser.add_argument("--subset", choices=HARA_SUBSETS, help="hara: keep only this subset (default: all)")
    parser.add_argument("--boxes", type=Path, help="hara: UCF101-24 pyannot.pkl whose boxes join by video name")
    parser.add_argument("--clip-frames", type=int, default=16, help="hara: frames in the clip, for --boxes")
    parser.add_argument("--path-template", default=KINETICS_TEMPLATE,
                        help="kinetics: video path under --video-root (fields label, youtube_id, time_start, "
                             "time_end, split)")
    return parser


def _class_names(path: Path | None) -> list[str] | None:
    """Non-blank lines of a class-list file, or None when no file is given."""
    if path is None:
        return None
    try:
        return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read class list ({exc})") from None


def _clip_frames(value: str | None) -> int:
    """--frames as the clip length for ucf101-24 / ucf101v2."""
    if value is None:
        return 16
    if not value.isdigit():
        raise ConfigError(f"--frames must be a whole number of frames here, got {value!r}")
    return int(value)


def _hara(args: argparse.Namespace) -> list[ManifestRow]:
    """Rows of a 3D-ResNets-PyTorch split JSON over `--frames ROOT`, boxes joined from `--boxes`."""
    if args.frames is None:
        raise ConfigError("--from hara needs --frames ROOT (the CLASS/VIDEO/image_NNNNN.jpg folders)")
    root = Path(args.frames)
    boxes = ucf101_24_pyannot(args.boxes, root, args.start, args.clip_frames) if args.boxes else ()
    return hara_split(args.annotations, root, args.subset, boxes)


def read_source(args: argparse.Namespace) -> list[ManifestRow]:
    """Manifest rows from the annotation source the arguments name."""
    if args.source == "hara":
        return _hara(args)
    if args.video_root is None:
        raise ConfigError(f"--from {args.source} needs --video-root")
    if args.source == "ucf101":
        if args.class_index is None:
            raise ConfigError("--from ucf101 needs --class-index classInd.txt")
        return ucf101_split(args.annotations, args.class_index, args.video_root)
    if args.source == "ucf101-24":
        return ucf101_24_pyannot(args.annotations, args.video_root, args.start, _clip_frames(args.frames))
    classes = _class_names(args.classes)
    if args.source == "ucf101v2":
        return ucf101v2_gt(args.annotations, args.video_root, args.start, _clip_frames(args.frames), classes)
    return kinetics_csv(args.annotations, args.video_root, classes, args.path_template)


def run(args: argparse.Namespace) -> int:
    rows = read_source(args)
    write_manifest(rows, args.out)
    boxed = sum(row.boxes is not None for row in rows)
    print(f"wrote {len(rows)} rows ({boxed} with boxes) to {args.out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("manifest", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
