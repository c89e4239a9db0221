"""gpu_check rehearsed on the CPU: every section of the one GPU script runs end to end at a small size, so the
device's few minutes are not spent finding its bugs."""

from __future__ import annotations

from pathlib import Path

import pytest

from aosa.jobs import gpu_check


class FakeBusy:
    """GpuBusy's shape without NVML (there is no GPU here)."""

    gpus: list = []

    def __enter__(self) -> FakeBusy:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.slow
def test_every_section_runs_on_the_cpu(ray_cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """Maps at s=32 (16 masks): on a CPU without bf16 instructions a bf16 probe pass takes 26x fp32's, and the
    per-map and fidelity sections' s=8 maps in bf16 ran past the test's 10 minutes."""
    for name, value in {"DEVICE": "cpu", "SPEED_MODEL": "probe", "MAP_STRIDE": 32, "FIDELITY_CLIPS": 2,
                        "FIDELITY_BACKENDS": "eager-bf16", "DATASET_CLIPS": 3, "GRAPH_CLIPS": 2,
                        "DATASET_BACKEND": "eager", "DATASET_DECODE_ACTORS": 1, "GpuBusy": FakeBusy}.items():
        monkeypatch.setattr(gpu_check, name, value)
    failures = gpu_check.main(["--budget", "900", "--model-actors", "1,2", "--maps", "eager:16,eager-bf16:16",
                               "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert failures == 0, out
    for row in ("dataset run, 1 actors", "dataset run, 2 actors", "map eager b=16", "map eager-bf16 b=16",
                "operator counts", "fidelity", "CUDA graphs over clips"):
        assert any(line.startswith(row) and " ok " in line for line in out.splitlines()), (row, out)
    assert "static plans over 2 clips" in out
    assert "3 units in" in out and (tmp_path / "precision-appearance.json").is_file()
