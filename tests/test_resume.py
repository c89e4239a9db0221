"""A resume must match its run: options that change what a stored method key means are refused in one line;
options that change only how the run goes (actors, videos in flight, a limit) are allowed."""

import json
from pathlib import Path

import pytest

from aosa.engine.runtime.evaluation import Summary
from aosa.engine.store.writer import RunWriter
from aosa.jobs import evaluate as evaluate_job
from aosa.schemas.method_params import MethodParams
from aosa.schemas.run_config import RunConfig, config_changes, parse_methods

STORED = ["--methods", "aosa,osa:stride=4,random", "--stride", "8", "--model", "probe3d"]


def config(*argv: str, manifest: Path = Path("m.csv")) -> RunConfig:
    args = evaluate_job.build_parser().parse_args(["--manifest", str(manifest), "--store", "s", "--run-id", "r", *argv])
    return evaluate_job.config_from_args(args)


@pytest.fixture
def stored(tmp_path, monkeypatch) -> tuple[Path, list[str]]:
    """A store whose run `r` was started with STORED; evaluation itself is stubbed (no Ray): what it was
    asked to evaluate is collected."""
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path\nv,v.mp4\n")
    with RunWriter(tmp_path / "store", "r") as writer:
        writer.write_run({"run_id": "r", "config": json.dumps(config(*STORED, manifest=manifest).to_dict()),
                          "versions": {}, "status": "interrupted"})
    evaluated: list[RunConfig] = []
    monkeypatch.setattr(evaluate_job, "evaluate_held",
                        lambda writer, config, address: evaluated.append(config) or Summary(config.run_id, 0, 0, 1))
    return tmp_path, evaluated


def resume(folder: Path, *argv: str) -> int:
    return evaluate_job.main(["--manifest", str(folder / "m.csv"), "--store", str(folder / "store"), "--run-id", "r",
                              *argv])


def test_a_resume_with_the_stored_options_or_other_pacing_runs(stored):
    folder, evaluated = stored
    assert resume(folder, *STORED) == 0
    assert resume(folder, *STORED, "--max-in-flight", "9", "--model-actors", "3", "--decode-actors", "2",
                  "--limit", "1", "--metric-batch-size", "4", "--batch-size", "2", "--incremental", "off",
                  "--retry-errors") == 0
    assert resume(folder, "--methods", "aosa,gradcam", "--model", "probe3d") == 0  # fewer keys, a new one: same meaning
    # another model's units have keys of their own (the main job stores both probes in one run), whatever its options
    assert resume(folder, "--methods", "aosa", "--model", "torchvision:r3d_18", "--stride", "16", "--start", "4") == 0
    assert len(evaluated) == 4


@pytest.mark.parametrize("options, changes", [
    (["--stride", "16"], "aosa: stride 8 -> 16; random: stride 8 -> 16"),
    (["--start", "4", "--decoder", "pyav"], "start 0 -> 4; decoder 'auto' -> 'pyav'"),
    (["--methods", "aosa:top_k=0,osa:stride=4", "--top-k", "2"], "osa:stride=4: top_k 3 -> 2"),  # one new, one changed
    (["--score", "logit", "--methods", "random"], "random: score 'prob' -> 'logit'"),
    (["--backend", "eager-fp16"], "backend 'auto' -> 'eager-fp16'"),
])
def test_a_resume_that_changes_what_a_method_key_means_is_refused_in_one_line(stored, capsys, options, changes):
    folder, evaluated = stored
    argv = dict(zip(STORED[::2], STORED[1::2])) | dict(zip(options[::2], options[1::2]))
    assert resume(folder, *[item for pair in argv.items() for item in pair]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == (f"aosa evaluate: error: run 'r' was stored with other options, whose units these would join "
                    f"under the same keys: {changes} (resume with the stored options, or use a new --run-id)")
    assert evaluated == []


def test_changes_are_read_against_every_stored_config_of_the_model_and_old_configs_defaults():
    base = MethodParams()
    first = RunConfig("r", "m", "p", tuple(parse_methods("aosa,osa", base))).to_dict()
    second = RunConfig("r", "m", "p", tuple(parse_methods("aosa", base))).to_dict()
    del first["decode_device"], second["decode_device"]  # written before these existed: their defaults hold
    del first["methods"][1]["params"]["smoothness"]
    nightly = {"nightly": {"preset": "small"}}
    again = RunConfig("r", "m", "p", tuple(parse_methods("aosa,osa", MethodParams(top_k=2))))
    assert config_changes([first, second, nightly], again) == ["aosa: top_k 3 -> 2", "osa: top_k 3 -> 2"]
    other_model = {**first, "model": "q"}
    assert config_changes([other_model, second], again) == ["aosa: top_k 3 -> 2"]  # osa of model q: other units
    assert config_changes([nightly], again) == [] and config_changes([], again) == []
