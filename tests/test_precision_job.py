"""`aosa precision`: maps of a reduced precision against fp32 on real decoded clips, scored by the fp32 model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aosa.engine.datasets.synthetic import write_benchmark
from aosa.jobs.precision import main


@pytest.mark.slow
def test_bf16_maps_against_fp32_on_two_clips(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = write_benchmark(tmp_path / "clips", videos=2, seed=3)
    out = tmp_path / "precision.json"
    assert main(["--manifest", str(manifest), "--model", "probe", "--backends", "eager-bf16", "--json", str(out),
                 "--stride", "16"]) == 0
    table = capsys.readouterr().out
    assert "eager-bf16" in table and "rank correlation" in table
    result = json.loads(out.read_text())
    assert len(result["per_video"]) == 2
    for video in result["per_video"]:
        assert video["eager"]["correlation"] == pytest.approx(1.0) and video["eager"]["overall"] == 0.0
        assert 0.9 < video["eager-bf16"]["correlation"] < 1.0  # bf16 arithmetic ran, and the maps still agree
    correlation, half, count = result["summary"]["eager-bf16"]["correlation"]
    assert count == 2 and half >= 0


def test_unknown_or_reference_backends_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path\n")
    for backends in ("eager", "onnx", ""):
        assert main(["--manifest", str(manifest), "--model", "probe", "--backends", backends]) == 2
        assert "--backends" in capsys.readouterr().err
