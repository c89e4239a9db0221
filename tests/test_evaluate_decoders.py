"""Issue 15 end to end: `aosa evaluate --decoder dali` and `--decoder pyav` give the same metrics on every clip
DALI can read here (VP9 and MJPEG on the CPU), and the metrics rows say which decoder made them."""

from __future__ import annotations

from pathlib import Path

import pytest

from aosa.engine.datasets.manifests import write_manifest
from aosa.jobs.evaluate import main
from aosa.schemas.manifest import ManifestRow
from tests.stored import stored_rows
from tests.videos import colour_pattern, moving_square, write_video

TOLERANCE = 0.005  # deletion, insertion and over-all AUC


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("decoders")
    square = moving_square(18, 96, 128, step=3)
    square[:, :48] = colour_pattern(18, 48, 128)  # saturated gradients where chroma upsampling differed
    rows = [ManifestRow("vp9", write_video(root / "v.webm", square, "libvpx-vp9"), label=1),
            ManifestRow("mjpeg", write_video(root / "v.avi", square, "mjpeg"), label=1)]
    write_manifest(rows, root / "manifest.csv")
    return root / "manifest.csv"


def test_dali_and_pyav_runs_give_the_same_metrics(ray_cluster, manifest: Path, tmp_path: Path) -> None:
    results = {}
    for decoder in ("dali", "pyav"):
        assert main(["--manifest", str(manifest), "--methods", "aosa,aosa-approx", "--store", str(tmp_path),
                     "--run-id", decoder, "--decoder", decoder, "--stride", "32", "--model", "probe3d"]) == 0
        rows = stored_rows(tmp_path, "metrics", decoder)
        results[decoder] = {(row["video_id"], row["method"]): row for row in rows}
    assert results["dali"].keys() == results["pyav"].keys() and len(results["dali"]) == 4
    for key, dali in results["dali"].items():
        pyav = results["pyav"][key]
        for column in ("deletion_auc", "insertion_auc", "overall"):
            assert abs(dali[column] - pyav[column]) <= TOLERANCE, (key, column, dali[column], pyav[column])
        if dali.get("decoder") is not None:  # written by the recorder once it copies PreparedVideo.decoder
            assert dali["decoder"].startswith("dali-cpu ") and pyav["decoder"].startswith("pyav ")
