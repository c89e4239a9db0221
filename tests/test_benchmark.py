"""The benchmark job runs end to end and reports consistent counts and ratios (timings are not asserted)."""

import json

import pytest

from aosa.jobs.benchmark import main
from aosa.jobs.benchmark_clips import synthetic_video
from aosa.kernels.anchors import grid_anchors


def test_benchmark_reports_stages_counts_and_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--model", "probe3d", "--device", "cpu", "--repeats", "1", "--stride", "32",
            "--methods", "aosa,aosa-approx", "--json", str(out)]
    assert main(argv) == 0
    report = json.loads(out.read_text())
    anchors = len(grid_anchors(112, 112, 32))
    assert report["anchors"] == anchors == 9
    stages = report["stages"]
    assert set(stages) == {"flow:farneback", "aosa:forwards", "aosa:forwards:fed", "aosa:dense", "aosa:incremental",
                           "aosa", "aosa-approx:fwd+bwd", "aosa-approx"}
    # the probe on a CPU takes channels-last batches: the same passes fed so are the dense path's own floor
    assert report["batch_format"] == "channels_last_3d" and stages["aosa:forwards:fed"]["reference"] is None
    assert report["overheads"]["aosa"] == pytest.approx(stages["aosa:dense"]["seconds"]
                                                       / stages["aosa:forwards:fed"]["seconds"])
    # exact AOSA scores the clean clip once and each of the N occluded clips once, whichever path scores them
    for name in ("aosa", "aosa:dense", "aosa:incremental", "aosa:forwards", "aosa:forwards:fed"):
        assert stages[name]["n_forward"] == anchors + 1, name
    for name in ("aosa", "aosa:dense", "aosa:incremental"):
        assert stages[name]["reference"] == "aosa:forwards" and report["ratios"][name] == stages[name]["ratio"]
    assert stages["aosa-approx"]["reference"] == "aosa-approx:fwd+bwd"
    assert stages["aosa-approx"]["n_forward"] == stages["aosa-approx:fwd+bwd"]["n_forward"] == 1
    assert report["speedups"]["aosa"] == pytest.approx(stages["aosa:dense"]["seconds"]
                                                      / stages["aosa:incremental"]["seconds"])
    for name, stage in stages.items():
        assert len(stage["seconds_all"]) == 1 and stage["seconds"] == stage["seconds_all"][0], name
        assert stage["peak_mib"] >= 0, name
        if stage["reference"]:  # a ratio is the stage's time over its reference's, both from this run
            assert stage["ratio"] == pytest.approx(stage["seconds"] / stages[stage["reference"]]["seconds"])
    shares = report["flop_shares"]["aosa"]
    assert set(report["flop_shares"]) == {"aosa"} and 0 < shares["changed"] <= 1 and 0 < shares["planned"] <= 1
    printed = capsys.readouterr().out
    assert f"each mask's exactly changed outputs are {shares['changed']:.3f}" in printed
    assert "probe3d" in printed and "aosa:forwards" in printed and "peak MiB" in printed
    assert "aosa: dense seconds / incremental seconds = " in printed
    assert "batches channels_last_3d" in printed and "aosa: dense seconds / the same passes on batches" in printed


def test_benchmark_rejects_unknown_method_in_one_line(capsys):
    assert main(["--methods", "aosa,nope", "--repeats", "1", "--stride", "56", "--device", "cpu"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err


def test_synthetic_video_moves():
    video = synthetic_video(4, 32, 48)
    assert video.shape == (4, 32, 48, 3) and video.dtype.name == "uint8"
    assert (video[0] != video[1]).any()


def test_benchmark_can_score_a_subset_of_masks(tmp_path):
    out = tmp_path / "bench.json"
    assert main(["--model", "probe3d", "--device", "cpu", "--repeats", "1", "--methods", "osa", "--masks", "5",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["masks"] == 5 and report["stages"]["osa:dense"]["n_forward"] == 5 + 1


def test_operator_calls_of_an_incremental_map_do_not_grow_with_its_masks(tmp_path, capsys):
    """Issue 23: with batches as large as a plan, the incremental path's operator calls are the same within 10% for
    4x the masks (they grew 2.5x when layers were gathered a few masks at a time)."""
    out = tmp_path / "bench.json"
    assert main(["--model", "probe", "--device", "cpu", "--repeats", "1", "--methods", "aosa", "--stride", "32",
                 "--operators", "--json", str(out)]) == 0
    rows = {row["stride"]: row for row in json.loads(out.read_text())["operators"]}
    assert rows[8]["masks"] == 196 and rows[4]["masks"] == 784
    assert abs(rows[4]["operators"] - rows[8]["operators"]) <= 0.1 * rows[8]["operators"]
    assert rows[4]["convolutions"] == rows[8]["convolutions"] and rows[8]["kernels"] == 0  # no CUDA here
    assert rows[4]["in_runs"] == rows[8]["in_runs"] > 0 and not rows[8]["graphs"]  # plans run op by op on a CPU
    assert "operators" in capsys.readouterr().out


def test_static_plans_over_several_clips_give_the_op_by_op_maps(tmp_path, capsys):
    """Issue 23: `--graph-clips` runs each clip's map through one worker's static plans and op by op: the maps agree,
    every plan ran from a static plan, and none holds less than it computes."""
    out = tmp_path / "graphs.json"
    assert main(["--model", "probe", "--device", "cpu", "--graph-clips", "3", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["runs"] == 3 and 1 <= report["captures"] <= 3 and not report["graphs"]
    assert report["max_map_difference"] <= 1e-5 and report["dense_maps"] == 0 and report["padding"] >= 1
    assert "static plans over 3 clips" in capsys.readouterr().out
    assert main(["--model", "probe", "--device", "cpu", "--graph-clips", "0"]) == 2
