"""`aosa synth --long`: long videos whose evidence is only in a known segment, recorded in the manifest; a
segment outside the video is one clear error."""

import json
import re

import numpy as np
import pytest

from aosa.engine.datasets.long_synthetic import SEGMENT, render_long
from aosa.engine.datasets.manifests import read_manifest, write_manifest
from aosa.engine.errors import ConfigError
from aosa.engine.models.loading import load_model
from aosa.engine.runtime.workers import Failure, VideoPreparer
from aosa.jobs.synth import main
from aosa.schemas.manifest import ManifestError, ManifestRow, parse_segment
from tests.videos import moving_square, write_video


def corners(boxes):
    return np.array([box[:2] for box in boxes])


@pytest.mark.parametrize("label", range(4))
def test_motion_target_moves_in_its_direction_only_inside_the_segment(label):
    frames, boxes, (first, end) = render_long(np.random.default_rng(label), label, 96)
    assert frames.shape == (96, 112, 112, 3) and len(boxes) == 96
    assert SEGMENT[0] <= end - first <= SEGMENT[1] and 0 <= first and end <= 96
    steps = np.diff(corners(boxes), axis=0)  # frame t to t + 1
    moving = steps[first:end - 1]
    direction = [(1, 0), (-1, 0), (0, 1), (0, -1)][label]
    assert (moving @ np.array(direction) >= 1).all()  # 2-4 px a frame, rounded: always forward
    still = np.concatenate([steps[:max(first - 1, 0)], steps[end:]])
    assert np.abs(still).max() <= 2  # standing, or jittering by +-1 px about where it stands


def test_appearance_look_is_shown_only_inside_the_segment():
    frames, boxes, (first, end) = render_long(np.random.default_rng(3), 0, 80, task="appearance")
    x0, y0, x1, y1 = boxes[first - 1 if first else end]
    outside = frames[first - 1 if first else end, y0:y1, x0:x1]
    assert len(np.unique(outside.reshape(-1, 3), axis=0)) == 1  # a flat square: no pattern, one colour
    x0, y0, x1, y1 = boxes[first]
    assert len(np.unique(frames[first, y0:y1, x0:x1].reshape(-1, 3), axis=0)) == 2  # the checker's two tones
    assert np.abs(np.diff(corners(boxes), axis=0)).max() >= 2  # the target moves outside the segment too


def test_synth_long_writes_segments_and_boxes_deterministically(tmp_path, capsys):
    args = ["--videos", "3", "--long", "64-80", "--seed", "4", "--codec", "frames"]
    assert main(["--out", str(tmp_path / "a"), *args]) == 0
    assert main(["--out", str(tmp_path / "b"), *args]) == 0
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    rows = read_manifest(tmp_path / "a" / "manifest.csv")
    for row in rows:
        length = len(list(row.path.iterdir()))
        assert 64 <= length <= 80 and len(row.boxes) == length and row.segment[1] <= length
    assert rows[0].video_id == "long-4-00000"


@pytest.mark.parametrize(("args", "problem"), [
    (["--long", "64-abc"], "--long takes FRAMES or MIN-MAX"),
    (["--long", "30"], "a long video needs at least 39 frames"),
    (["--long", "80-64"], "video lengths must be 0 < MIN <= MAX"),
    (["--long", "64", "--variant", "pan"], "--long writes the plain variant only"),
])
def test_bad_long_options_are_one_error_line(tmp_path, capsys, args, problem):
    assert main(["--out", str(tmp_path), "--videos", "1", *args]) == 2
    assert problem in capsys.readouterr().err


@pytest.mark.parametrize(("value", "problem"), [
    ("[3]", "must be [first, end], two integer frames"), ("[1.5, 4]", "two integer frames"),
    ("[5, 5]", "needs 0 <= first < end"), ("[-1, 4]", "needs 0 <= first < end"), ("[1,", "not valid JSON"),
])
def test_bad_segment_cells(value, problem):
    with pytest.raises(ManifestError, match=re.escape(problem)):
        parse_segment(value)
    assert parse_segment("[2, 9]") == (2, 9) and parse_segment("") is None


def test_a_bad_segment_names_the_manifest_row(tmp_path):
    (tmp_path / "manifest.csv").write_text("video_id,path,segment\nv,v.mp4,\"[4, 2]\"\n")
    with pytest.raises(ConfigError, match=r"manifest.csv: row 1: column segment: needs 0 <= first < end"):
        read_manifest(tmp_path / "manifest.csv")


def test_segment_round_trips_through_csv_and_parquet(tmp_path):
    row = ManifestRow("v", tmp_path / "v.mp4", label=1, segment=(3, 20))
    for name in ("m.csv", "m.parquet"):
        write_manifest([row], tmp_path / name)
        assert read_manifest(tmp_path / name) == [row]


@pytest.mark.parametrize(("segment", "kind", "problem"), [
    ((10, 41), "bad_segment", "segment [10, 41] lies outside the video's 40 frames"),
    (None, None, None),
])
def test_whole_videos_are_prepared_with_their_segment_checked(tmp_path, segment, kind, problem):
    path = write_video(tmp_path / "v.mp4", moving_square(40, 64, 64))
    preparer = VideoPreparer(load_model("probe:motion", "cpu").preprocessing)
    prepared = preparer.prepare(ManifestRow("v", path, segment=segment), ("farneback",), whole=True)
    if kind is None:
        assert prepared.shape == (3, 40, 112, 112) and prepared.flows["farneback"].shape[0] == 39
        return
    assert isinstance(prepared, Failure) and prepared.kind == kind
    assert problem in prepared.message and str(path) in prepared.message


def test_a_whole_video_shorter_than_a_clip_fails_as_too_few_frames(tmp_path):
    path = write_video(tmp_path / "short.mp4", moving_square(12, 64, 64))
    preparer = VideoPreparer(load_model("probe:motion", "cpu").preprocessing)
    failure = preparer.prepare(ManifestRow("s", path), (), whole=True)
    assert failure.kind == "too_few_frames" and "has 12 frames from the start frame" in failure.message
    assert json.dumps(failure.message).count(str(path)) == 1
