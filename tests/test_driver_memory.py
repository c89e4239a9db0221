"""The evaluate driver streams its manifest: its peak memory for 20,000 rows is within 1.5x of that for 2,000."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def driver_peak_mib(rows: int, folder: Path) -> float:
    result = subprocess.run([sys.executable, "-m", "tests.driver_memory", str(rows), str(folder)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert outcome["code"] == 3  # every row is a missing file: all units failed, none crashed the run
    return outcome["peak_mib"]


@pytest.mark.slow
def test_driver_memory_does_not_grow_with_the_manifest(tmp_path):
    small, large = driver_peak_mib(2_000, tmp_path / "small"), driver_peak_mib(20_000, tmp_path / "large")
    print(f"driver peak: {small:.0f} MiB for 2,000 rows, {large:.0f} MiB for 20,000 ({large / small:.3f}x)")
    assert large <= 1.5 * small
