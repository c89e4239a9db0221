"""`aosa sanity`: one Spearman curve per method over the model's layers, as CSV and a plot."""

import csv

import pytest

from PIL import Image

from aosa.engine.datasets.manifests import write_manifest
from aosa.engine.models.loading import load_model
from aosa.jobs.sanity import main, mean_curves
from aosa.kernels.metrics import cascade_layers
from aosa.schemas.manifest import ManifestRow
from tests.videos import moving_square, write_video


def test_sanity_job_writes_a_curve_per_method(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", moving_square(16, 112, 112))
    manifest = tmp_path / "manifest.csv"
    write_manifest([ManifestRow("clip", video, label=0)], manifest)
    out = tmp_path / "out"
    assert main(["--manifest", str(manifest), "--model", "probe3d", "--methods", "aosa-approx,aosa:stride=32",
                 "--out", str(out)]) == 0
    layers = cascade_layers(load_model("probe3d").module)
    with (out / "sanity.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 * len(layers)
    for method in ("aosa-approx", "aosa:stride=32"):
        mine = [row for row in rows if row["method"] == method]
        assert [row["layer"] for row in mine] == layers
        assert all(-1.0 <= float(row["spearman"]) <= 1.0 for row in mine)
    exact = [float(row["spearman"]) for row in rows if row["method"] == "aosa:stride=32"]
    assert exact[-1] < 0.9  # with every layer re-initialized, exact AOSA no longer gives the same map
    with Image.open(out / "sanity.png") as plot:
        assert plot.size[0] > 400 and plot.convert("L").getextrema()[0] < 128
    assert "aosa-approx:" in capsys.readouterr().out


def test_mean_curves_give_a_95_percent_interval_per_layer():
    records = [{"video_id": v, "method": "m", "step": 1, "layer": "fc", "spearman": rho}
               for v, rho in zip("abc", (0.1, 0.2, 0.3))]
    records.append({"video_id": "a", "method": "one", "step": 1, "layer": "fc", "spearman": 0.5})
    curves = mean_curves(records)
    (layer, mean, half), = curves["m"]
    assert layer == "fc" and mean == pytest.approx(0.2) and half == pytest.approx(1.96 * 0.1 / 3 ** 0.5)
    assert curves["one"] == [("fc", 0.5, 0.0)]  # one video: no spread to estimate
