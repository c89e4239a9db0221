"""Killing a model actor, a decode actor and the driver during a run, then resuming: every unit stored once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_run_killed_three_ways_and_resumed_stores_every_unit_exactly_once(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tests.chaos", "6", str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert [kill["what"] for kill in outcome["kills"]] == ["ModelWorker", "VideoPreparer", "driver"]
    assert all(kill["pid"] for kill in outcome["kills"]), outcome["kills"]  # each one found and killed
    assert outcome["first_exit"] == -9 and outcome["resume_exit"] == 0
    assert outcome["stored_units"] == outcome["units"] == 12 and outcome["statuses"] == {"ok": 12}
    assert outcome["duplicates"] == 0 and outcome["missing"] == 0 and outcome["orphan_maps"] == 0
