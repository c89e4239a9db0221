"""The HTML report of a run is one self-contained page: it references nothing outside itself, and opens in
headless Chromium (Debian's `chromium`) with no console message, showing a non-blank page."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.datasets.synthetic import write_benchmark
from aosa.engine.reporting.html_report import _cell, write_report
from aosa.engine.reporting.regression import load_rules
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.rows import map_file
from aosa.engine.store.writer import RunWriter
from aosa.jobs.nightly import judge_run, write_nightly_row
from aosa.schemas.method_params import MethodParams
from aosa.schemas.run_config import RunConfig, parse_methods
from tests.stored import write_unit

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--window-size=1280,2000")
METHODS = ("aosa-approx", "random")
DETAILS = {"versions": {}, "git_sha": None, "host": "test", "device": "cpu"}


def chromium() -> Path:
    """Debian's headless browser; missing it fails in CI (which installs it) and skips elsewhere."""
    if CHROMIUM.is_file():
        return CHROMIUM
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing in CI: .ci/run installs Debian's chromium package")
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); CI installs it and runs this test")


def screenshot(page: Path, png: Path, profile: Path) -> str:
    """Open `page` in headless Chromium and save a screenshot; returns Chromium's log."""
    result = subprocess.run([str(chromium()), *FLAGS, f"--user-data-dir={profile}", f"--screenshot={png}",
                             page.as_uri()], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stderr


def console_messages(log: str) -> list[str]:
    """The page's console messages in Chromium's log (logged as INFO:CONSOLE, errors as "Uncaught ...")."""
    return [line for line in log.splitlines() if ":CONSOLE" in line or "Uncaught" in line]


def store_run(writer: RunWriter, manifest: Path, night: int) -> None:
    """Metrics, maps and the evaluate config of one run over the manifest; later nights score higher."""
    rng, run_id = np.random.default_rng(night), writer.run_id
    config = RunConfig(run_id, str(manifest), "probe3d", tuple(parse_methods(",".join(METHODS), MethodParams())))
    writer.write_run({"run_id": run_id, "config": config.to_dict(), "status": "finished", **DETAILS})
    for row in read_manifest(manifest):
        for rank, method in enumerate(METHODS):
            saved = map_file(run_id, row.video_id, "probe3d", method, rng.random((16, 112, 112), dtype=np.float32))
            deletion = np.linspace(0.9, 0.1, 29) ** (2 - rank) + 0.01 * night
            insertion = 1.0 - deletion[::-1] + 0.05 * night
            write_unit(writer, [{
                "run_id": run_id, "video_id": row.video_id, "model": "probe3d", "method": method, "status": "ok",
                "deletion_auc": float(deletion.mean()), "insertion_auc": float(insertion.mean()),
                "overall": float(insertion.mean() - deletion.mean()), "deletion_curve": deletion.tolist(),
                "insertion_curve": insertion.tolist(), "spt_hits": 8 + night, "spt_frames": 16,
                "seconds_total": 0.5 + 0.1 * night, "params": "{}", "map_path": saved.path}], files=[saved])
    reference = [{"model": "probe3d", "seconds": 0.01}]
    write_nightly_row(writer, {"preset": "small", "preset_version": 1, "reference": reference, "failed_units": 0},
                      "evaluated", DETAILS)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """The report of the second of two judged nightly runs over two synthetic clips."""
    root = tmp_path_factory.mktemp("report")
    manifest = write_benchmark(root / "clips", videos=2, seed=0)
    for night, run_id in enumerate(("nightly-a", "nightly-b")):
        with RunWriter(root / "store", run_id) as writer:
            store_run(writer, manifest, night)
            judge_run(writer, load_rules(), None)
    return write_report(StoreReader(root / "store"), "nightly-b")


def test_report_is_one_self_contained_file_with_every_section(report):
    page = report.read_text(encoding="utf-8")
    assert re.findall(r"https?://|<script|<link|@import|url\(", page) == []
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(source.startswith("data:image/png;base64,") for source in sources)
    for section in ("Verdict", "Table I:", "Table IV:", "Table V:", "Deletion and insertion curves",
                    "Trends over the last 2 nightly runs", "plain-0-00000 (probe3d)", "plain-0-00001 (probe3d)"):
        assert section in page
    assert "deltas against nightly-a" in page
    assert 'class="better"' in page and 'class="worse"' in page  # higher scores; more seconds per map
    assert len(sources) == 2 * (1 + len(METHODS)) + 2  # overlay strips, curves, trends


@pytest.mark.slow
def test_report_opens_in_headless_chromium_without_console_messages(report, tmp_path):
    png = tmp_path / "report.png"
    log = screenshot(report, png, tmp_path / "profile")
    assert console_messages(log) == []
    pixels = np.asarray(Image.open(png).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (2000, 1280) and pixels.std() > 20


def test_float_noise_is_no_change_but_a_real_drop_is_worse():
    """The same run summed in another order differs in the last bit: that is no delta to colour."""
    assert 'class="same">(+0)' in _cell("overall", {"overall": 0.1 + 0.2}, {"overall": 0.3})
    assert 'class="worse">(-0.001)' in _cell("overall", {"overall": 0.299}, {"overall": 0.3})
