"""`aosa evaluate --clips all|every:HOP` on an embedded Ray cluster: one row per video and method with the stitched
map, its first window's clip metrics equal to a `--clips first` run's, the video's own metrics, bad videos and
segments as error rows, and a resume that stores nothing twice and refuses another --clips."""

import json

import numpy as np
import pytest

from aosa.engine.datasets.long_synthetic import write_long_benchmark
from aosa.engine.datasets.manifests import read_manifest, write_manifest
from aosa.engine.io.preprocess import load_video
from aosa.engine.models.loading import load_model
from aosa.engine.runtime.whole import explain_whole_video
from aosa.engine.store.reader import StoreReader
from aosa.jobs.evaluate import EXIT_UNITS_FAILED, main
from aosa.jobs.report import main as report_main
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams
from tests.stored import stored_rows
from tests.videos import moving_square, write_video

METHODS = "gradcam,random"
OPTIONS = ["--model", "probe:motion", "--model-actors", "2", "--methods", METHODS]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    root = tmp_path_factory.mktemp("long")
    rows = read_manifest(write_long_benchmark(root, 2, seed=3, lengths=(40, 48), codec="jpeg-frames"))
    short = write_video(root / "short.mp4", moving_square(12, 64, 64))
    rows += [ManifestRow("outside", rows[0].path, label=1, segment=(30, 400)), ManifestRow("short", short, label=0)]
    path = root / "all.csv"
    write_manifest(rows, path)
    return path, rows


def test_whole_video_units_are_stored_once_with_their_metrics(ray_cluster, manifest, tmp_path, capsys):
    path, rows = manifest
    store = tmp_path / "store"
    args = ["--manifest", str(path), "--store", str(store), *OPTIONS]
    assert main([*args, "--run-id", "whole", "--clips", "all"]) == EXIT_UNITS_FAILED
    assert main([*args, "--run-id", "first"]) == EXIT_UNITS_FAILED
    whole = {(r["video_id"], r["method"]): r for r in stored_rows(store, "metrics", "whole")}
    first = {(r["video_id"], r["method"]): r for r in stored_rows(store, "metrics", "first")}
    assert len(whole) == 4 * 2
    assert {whole["outside", m]["error_kind"] for m in ("gradcam", "random")} == {"bad_segment"}
    assert "segment [30, 400] lies outside the video's" in whole["outside", "gradcam"]["error"]
    assert whole["short", "random"]["error_kind"] == "too_few_frames"
    model = load_model("probe:motion", "cpu")
    for row in rows[:2]:
        frames = load_video(row.path, model.preprocessing).tensor.shape[1]
        for method in METHODS.split(","):
            unit, clip = whole[row.video_id, method], first[row.video_id, method]
            assert unit["status"] == "ok" and unit["clips"] == "all" and unit["hop"] == 8
            assert unit["video_frames"] == frames and unit["window_starts"][-1] == frames - 16
            saved = StoreReader(store).load_map(unit["map_path"]).astype(np.float32)
            _, reference = explain_whole_video(row.path, model, method, MethodParams(), target=row.label)
            np.testing.assert_allclose(saved, reference.saliency, rtol=2e-3, atol=2e-3 * np.abs(saved).max())
            assert unit["evidence_curve"] == pytest.approx(reference.evidence.drops.tolist(), abs=1e-5)
            assert unit["score"] == pytest.approx(reference.score, rel=1e-5)
            # the first window's map is the clip map: its clip metrics are a --clips first run's
            for column in ("deletion_auc", "insertion_auc", "spt_hits", "spt_frames", "target"):
                assert unit[column] == pytest.approx(clip[column], abs=1e-4), column
            assert (unit["segment_start"], unit["segment_end"]) == row.segment
            assert unit["spt_video_frames"] == frames and unit["spt_segment_frames"] == row.segment[1] - row.segment[0]
            assert unit["tpt_curve"] in (True, False) and 0 < unit["tpt_chance"] < 1
        assert clip["clips"] is None and clip["window_starts"] is None
    maps = {(m["video_id"], m["method"]): m["shape"] for m in stored_rows(store, "maps", "whole")}
    assert maps[rows[0].video_id, "gradcam"][0] == whole[rows[0].video_id, "gradcam"]["video_frames"]

    capsys.readouterr()
    assert report_main(["--store", str(store), "--run-id", "whole", "--table", "time", "--format", "json"]) == 0
    table = {row["method"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(table) == {"gradcam", "random"} and table["random"]["videos"] == 2
    assert report_main(["--store", str(store), "--run-id", "whole"]) == 0
    assert "T-PT curve" in capsys.readouterr().out

    assert main([*args, "--run-id", "whole", "--clips", "all"]) == 0  # a resume: everything is stored
    assert "0 units ok, 0 failed, 8 already stored" in capsys.readouterr().out
    assert len(stored_rows(store, "metrics", "whole")) == 8
    assert main([*args, "--run-id", "whole", "--clips", "every:4"]) == 2
    assert "clips 'all' -> 'every:4'" in capsys.readouterr().err


@pytest.mark.parametrize(("clips", "problem"), [
    ("every:17", "--clips every:17: a hop of 17 frames must be between 1 and the model's clip length 16"),
    ("every:0", "--clips takes first, all or every:HOP"), ("most", "--clips takes first, all or every:HOP"),
])
def test_bad_clips_are_one_error_line(ray_cluster, manifest, tmp_path, capsys, clips, problem):
    path, _ = manifest
    assert main(["--manifest", str(path), "--store", str(tmp_path), "--clips", clips, *OPTIONS]) == 2
    assert problem in capsys.readouterr().err
