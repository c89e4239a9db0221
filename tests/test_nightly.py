"""`aosa nightly`: the small preset runs once per module; its run is then judged against itself, against a
baseline made better on purpose, and under a newer rules file. Rules files are validated."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from datetime import timedelta
from pathlib import Path

import pyarrow.compute as pc
import pytest

from aosa.engine.reporting.regression import DEFAULT_RULES, RulesError, judge, load_rules, nightly_runs
from aosa.engine.runtime.evaluation import Summary
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.writer import RunWriter
from aosa.jobs import nightly as nightly_job
from aosa.jobs.cli import main as aosa
from aosa.jobs.nightly import Part, judge_run, main, write_nightly_row
from tests.stored import stored_table, write_unit


def unit_row(model: str, **extra) -> dict:
    """The metrics row of one scored unit of the `random` method."""
    return {"video_id": "v0", "model": model, "method": "random", "status": "ok", "overall": 0.1,
            "seconds_total": 1.0, "params": "{}", **extra}


def run_nightly(*argv: str) -> tuple[int, str]:
    """Exit status and stdout of `aosa nightly ARGV`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


@pytest.fixture(scope="module")
def nightly(ray_cluster, tmp_path_factory) -> tuple[Path, str, str]:
    """A store holding one small-preset nightly run: (store, run id, the job's output)."""
    store = tmp_path_factory.mktemp("nightly") / "store"
    code, output = run_nightly("--store", str(store), "--preset", "small")
    assert code == 0, output
    with StoreReader(store).connect() as con:
        (run_id,) = nightly_runs(con)
    return store, run_id, output


@pytest.fixture
def store(nightly, tmp_path) -> tuple[Path, str]:
    """A private copy of the nightly store (judging writes verdict rows) and the run id."""
    original, run_id, _ = nightly
    copy = tmp_path / "store"
    shutil.copytree(original, copy)
    return copy, run_id


def test_first_night_passes_records_its_verdict_and_writes_the_report(nightly):
    store, run_id, output = nightly
    assert run_id.startswith("nightly-")
    assert "nothing to compare with" in output and f"nightly {run_id}: PASSED" in output
    report = Path(output.split("report: ")[-1].strip())
    assert report.is_file() and report.parent == store.resolve() / "reports"
    with StoreReader(store).connect() as con:
        run = nightly_runs(con)[run_id]
    assert run.status == "passed" and run.nightly["preset"] == "small" and run.rules_version == 1
    assert [(entry["model"], entry["where"]) for entry in run.nightly["reference"]] == [("probe", "model actors")]
    assert run.nightly["reference"][0]["seconds"] > 0


def test_a_run_compared_with_itself_passes(store):
    path, run_id = store
    code, output = run_nightly("--store", str(path), "--judge", run_id, "--baseline", run_id)
    assert code == 0, output
    assert "BROKEN" not in output and "6 of 6 rule checks held" in output  # 2 methods x 3 rules


def test_a_better_baseline_fails_the_night_naming_metric_and_method(store):
    path, run_id = store
    results = StoreReader(path)
    metrics = stored_table(path, "metrics", run_id)
    better = metrics.set_column(metrics.schema.get_field_index("overall"), "overall",
                                pc.add(metrics["overall"], 0.1))
    with results.connect() as con:
        verdict = nightly_runs(con)[run_id]
    with RunWriter(path, "nightly-better") as writer:
        write_unit(writer, [{**row, "run_id": "nightly-better"} for row in better.to_pylist()])
        writer.write_run({**{key: verdict.row[key] for key in ("versions", "git_sha", "host", "device")},
                          "run_id": "nightly-better", "config": {"nightly": verdict.nightly}, "status": "passed",
                          "created_at": verdict.started - timedelta(hours=1)})

    code, output = run_nightly("--store", str(path), "--judge", run_id)  # default baseline: latest passed before
    assert code == 1, output
    assert "against baseline nightly-better" in output
    for method in ("aosa-approx", "random"):
        assert f"BROKEN overall of {method} on probe" in output
    assert "allowed drop 0.02" in output and f"nightly {run_id}: FAILED" in output
    with results.connect() as con:
        assert nightly_runs(con)[run_id].status == "failed"


def test_judging_under_a_newer_rules_version_says_so_and_records_it(store, tmp_path):
    path, run_id = store
    rules = json.loads(DEFAULT_RULES.read_text()) | {"version": 2}
    newer = tmp_path / "rules-v2.json"
    newer.write_text(json.dumps(rules))
    code, output = run_nightly("--store", str(path), "--judge", run_id, "--baseline", run_id, "--rules", str(newer))
    assert code == 0, output
    assert "note: baseline was judged under rules v1, tonight under rules v2" in output
    with StoreReader(path).connect() as con:
        assert nightly_runs(con)[run_id].rules_version == 2


@pytest.mark.parametrize("text, problem", [
    ("{", "not a JSON rules file"),
    ('{"version": 0, "rules": [{"metric": "overall", "max_drop": 0.1}]}', '"version" must be a positive integer'),
    ('{"version": 1, "rules": [{"metric": "speed", "max_drop": 0.1}]}', "rules[0]: unknown metric 'speed'"),
    ('{"version": 1, "rules": [{"metric": "spt"}]}', "rules[0]: give exactly one of max_drop and max_increase"),
    ('{"version": 1, "rules": [{"metric": "spt", "max_drop": -1}]}', "max_drop must be a number at least 0"),
])
def test_a_bad_rules_file_is_an_error_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "rules.json"
    path.write_text(text)
    with pytest.raises(RulesError, match=str(path)) as error:
        load_rules(path)
    assert problem in str(error.value)
    assert main(["--store", str(tmp_path / "store"), "--rules", str(path)]) == 2


def test_first_matching_rule_applies_and_relative_bounds_scale_with_the_baseline(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"version": 3, "rules": [
        {"metric": "overall", "method": "random", "max_drop": 1.0},
        {"metric": "overall", "method": "*", "max_drop": 0.02},
        {"metric": "speed_ratio", "method": "aosa*", "max_increase": 0.25, "relative": True}]}))
    rules = load_rules(path)
    baseline = {("aosa", "m"): {"overall": 0.5, "speed_ratio": 10.0}, ("random", "m"): {"overall": 0.5}}
    tonight = {("aosa", "m"): {"overall": 0.49, "speed_ratio": 12.6}, ("random", "m"): {"overall": -0.4}}
    results = {(r.metric, r.method): r for r in judge(rules, baseline, tonight)}
    assert results["overall", "aosa"].passed and results["overall", "random"].passed
    speed = results["speed_ratio", "aosa"]
    assert not speed.passed and speed.limit == pytest.approx(12.5) and speed.allowed == "increase 25%"
    assert not judge(rules, baseline, {})[0].passed  # a method missing tonight breaks its rules


def test_judging_notes_videos_that_tonight_and_the_baseline_decoded_differently(tmp_path, capsys):
    details = {"versions": {}, "git_sha": None, "host": "test", "device": "cpu"}
    for run_id, decoder in (("nightly-a", "dali-cpu 2.4.0"), ("nightly-b", "pyav 18.1.0 (FFmpeg 8.1.2)")):
        with RunWriter(tmp_path / "store", run_id) as writer:
            write_unit(writer, [unit_row("probe", decoder=decoder)])
            write_nightly_row(writer, {"preset": "small", "preset_version": 2, "failed_units": 0,
                                       "reference": [{"model": "probe", "seconds": 0.01}]}, "evaluated", details)
            judge_run(writer, load_rules(), None)
    notes = [line for line in capsys.readouterr().out.splitlines() if "different decoders" in line]
    assert notes == ["note: 1 video(s) were decoded with different decoders in tonight and the baseline "
                     "(e.g. v0: dali-cpu 2.4.0 vs pyav 18.1.0 (FFmpeg 8.1.2)); their metrics may differ for that "
                     "reason alone"]


def test_the_nightly_holds_its_run_from_the_first_part_to_the_verdict(tmp_path, monkeypatch, capsys):
    """No compaction gets the run during or between its parts; its own rows are written holding it."""
    store = tmp_path / "store"
    parts = tuple(Part(name, lambda folder: folder / "m.csv", model, "random") for name, model in (("one", "probe"),
                                                                                                   ("two", "probe:x")))
    monkeypatch.setitem(nightly_job.PRESETS, "small", parts)
    compactions = []

    def evaluate_held(writer: RunWriter, config, address, reference_repeats) -> Summary:
        write_unit(writer, [unit_row(config.model)])
        compactions.append(aosa(["compact", "--store", str(store), "--run-id", writer.run_id]))
        return Summary(writer.run_id, 1, 0, 0, reference_seconds=0.01)

    monkeypatch.setattr(nightly_job.evaluate, "evaluate_held", evaluate_held)
    monkeypatch.setattr(nightly_job, "write_report", lambda store, run_id: store.root / "report.html")
    code, output = run_nightly("--store", str(store), "--preset", "small")
    assert code == 0 and compactions == [2, 2], output
    assert capsys.readouterr().err.count("is being written by pid") == 2
    with StoreReader(store).connect() as con:
        assert [run.status for run in nightly_runs(con).values()] == ["passed"]
    assert list((store / "locks").iterdir()) == []
