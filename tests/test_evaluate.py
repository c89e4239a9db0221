"""`aosa evaluate` on an embedded Ray cluster: sharded maps equal a single-process run, every unit is
stored exactly once, failures are rows, and a stopped run resumes without duplicates."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aosa.engine.datasets.manifests import write_manifest
from aosa.engine.io.preprocess import load_clip
from aosa.engine.models.loading import load_model
from aosa.engine.runtime.explain import explain_clip
from aosa.engine.runtime.recorder import UnitRecorder
from aosa.engine.store.reader import StoreReader
from aosa.jobs.evaluate import EXIT_UNITS_FAILED, main
from aosa.jobs.report import main as report_main
from aosa.kernels.methods import get_method
from aosa.kernels.metrics import faithfulness
from aosa.kernels.occlusion import CHECKED
from aosa.kernels.scoring import ScoreFunction
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams
from tests.stored import stored_rows
from tests.videos import moving_square, write_video

METHODS = "aosa,aosa-approx,osa,aosa:top_k=0"
OPTIONS = ["--stride", "32", "--model-actors", "2", "--model", "probe3d"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, list[ManifestRow]]:
    root = tmp_path_factory.mktemp("dataset")
    rows = []
    for i in range(2):
        path = write_video(root / f"v{i}.mp4", moving_square(18, 96, 128, step=2 + i))
        rows.append(ManifestRow(f"v{i}", path, label=i, boxes=((0, 4, 4, 40, 40), (3, 10, 4, 46, 40))))
    rows.append(ManifestRow("gone", root / "gone.mp4", label=1))
    manifest = root / "manifest.csv"
    write_manifest(rows, manifest)
    return manifest, rows


def metrics_rows(store: Path, run_id: str) -> list[dict]:
    return stored_rows(store, "metrics", run_id)


def test_run_stores_every_unit_once_and_matches_a_single_process_run(ray_cluster, dataset, tmp_path, capsys):
    manifest, rows = dataset
    store = tmp_path / "store"
    code = main(["--manifest", str(manifest), "--methods", METHODS, "--store", str(store), "--run-id", "e2e",
                 *OPTIONS])
    assert code == EXIT_UNITS_FAILED  # the missing video fails all four of its units
    assert capsys.readouterr().out.strip().splitlines()[-1].endswith("4 failed, 0 already stored -> " + str(store))
    stored = metrics_rows(store, "e2e")
    keys = [(r["video_id"], r["method"]) for r in stored]
    assert len(keys) == len(set(keys)) == 3 * 4
    failed = [r for r in stored if r["status"] == "error"]
    assert {r["video_id"] for r in failed} == {"gone"} and all("not found" in r["error"] for r in failed)

    model = load_model("probe3d", "cpu")
    for row in rows[:2]:
        clip = load_clip(row.path, model.preprocessing)
        for method, params in (("aosa", MethodParams(stride=32)), ("osa", MethodParams(stride=32)),
                               ("aosa-approx", MethodParams(stride=32)), ("aosa:top_k=0", MethodParams(stride=32, top_k=0))):
            reference = explain_clip(clip, model, method.split(":")[0], params, target=row.label)
            unit = next(r for r in stored if (r["video_id"], r["method"]) == (row.video_id, method))
            saved = StoreReader(store).load_map(unit["map_path"]).astype(np.float32)
            scale = np.abs(reference.saliency).max()
            np.testing.assert_allclose(saved, reference.saliency, atol=2e-3 * scale, rtol=2e-3)
            expected = faithfulness(ScoreFunction(model, row.label, "prob"), clip.tensor,
                                    torch.from_numpy(reference.saliency))
            assert unit["target"] == row.label and unit["n_forward"] == reference.n_forward
            inference = reference.inference  # the same path (probe3d: incremental) on the actors
            assert unit["inference"] == (inference.path if inference else None) and unit["inference_note"] is None
            if unit["inference"] == "incremental":  # checked on some masks: the largest difference is stored
                assert unit["incremental_max_diff"] <= 1e-5
            assert unit["deletion_auc"] == pytest.approx(expected.deletion_auc, abs=1e-4)
            assert unit["insertion_auc"] == pytest.approx(expected.insertion_auc, abs=1e-4)
            assert len(unit["deletion_curve"]) == 29 and unit["spt_frames"] == 2

    timings = stored_rows(store, "timings", "e2e")
    stage = {(t["video_id"], t["method"], t["stage"]): (t["items"], t["unit"]) for t in timings}
    wall = {(t["video_id"], t["method"], t["stage"]): t["seconds"] for t in timings}
    for unit in (r for r in stored if r["status"] == "ok"):  # compute seconds: forwards plus work, never queueing
        # seconds_total counts the flow only for the methods that use it (aosa, aosa:top_k=0, aosa-approx)
        uses_flow = get_method(unit["method_name"]).needs_flow
        flow = wall[unit["video_id"], "aosa", "flow:farneback"] if uses_flow else 0.0
        assert unit["seconds_model"] < unit["seconds_total"] - flow
        if unit["method"] == "aosa-approx":  # one actor call: its busy time lies inside the driver's wall time
            assert unit["seconds_total"] - flow <= wall[unit["video_id"], unit["method"], "explain"] + 1e-6
    for unit in (r for r in stored if r["status"] == "ok"):
        key = unit["video_id"], unit["method"]
        assert stage[*key, "model_forward"] == (unit["n_forward"], "clips")
        assert stage[*key, "metrics"] == (2 * 29, "clips") and stage[*key, "explain"] == (1, "maps")
        if unit["method_name"] in ("aosa", "osa"):  # masks built on the driver, one clip scored per mask, the
            checked = CHECKED if unit["inference"] == "incremental" else 0  # checked ones again dense, the clean one
            assert stage[*key, "masks"] == (unit["n_forward"] - checked - 1, "masks")
        elif unit["method_name"] == "aosa-approx":  # built on the actor: AOSA's tubes, as many
            assert stage[*key, "masks"] == (stage[key[0], "aosa", "masks"][0], "masks")
        else:
            assert (*key, "masks") not in stage
    for row in rows[:2]:  # decode and flow are stored once per video, with its first unit
        assert stage[row.video_id, "aosa", "decode"] == (16, "frames")
        assert stage[row.video_id, "aosa", "flow:farneback"] == (15, "frame pairs")
    capsys.readouterr()
    assert report_main(["--store", str(store), "--run-id", "e2e", "--table", "stages", "--format", "json"]) == 0
    throughput = {row["stage"]: row for row in json.loads(capsys.readouterr().out)}
    forward = throughput["model_forward"]
    assert forward["items"] == sum(r["n_forward"] for r in stored if r["status"] == "ok")
    assert forward["items_per_second"] == pytest.approx(forward["items"] / forward["seconds"])
    assert throughput["decode"]["items"] == 2 * 16 and throughput["total"]["unit"] == "maps"


def test_resume_after_a_stop_stores_the_rest_and_duplicates_nothing(ray_cluster, dataset, tmp_path, monkeypatch):
    manifest, _ = dataset
    store = tmp_path / "store"
    args = ["--manifest", str(manifest), "--methods", "aosa,aosa-approx", "--store", str(store), "--run-id", "r",
            *OPTIONS]
    recorded = []

    def stop_at_the_fourth_unit(original):
        def record(self, *args):
            if len(recorded) == 3:
                raise KeyboardInterrupt  # the driver is stopped: three units recorded, the fourth never
            recorded.append(args)
            return original(self, *args)
        return record

    for name in ("record", "record_failure"):
        monkeypatch.setattr(UnitRecorder, name, stop_at_the_fourth_unit(getattr(UnitRecorder, name)))
    assert main(args) == 130
    before = metrics_rows(store, "r")
    assert len(before) == 3
    monkeypatch.undo()
    failing_left = 2 - sum(row["video_id"] == "gone" for row in before)
    assert main(args) == (EXIT_UNITS_FAILED if failing_left else 0)  # the missing video's units failed
    stored = metrics_rows(store, "r")
    keys = [(r["video_id"], r["method"]) for r in stored]
    assert len(keys) == len(set(keys)) == 6
    timings = stored_rows(store, "timings", "r")
    totals = [(t["video_id"], t["method"]) for t in timings if t["stage"] == "total"]
    assert len(totals) == len(set(totals)) == 4  # four ok units, none timed twice
    assert main(args) == 0  # a third run finds everything stored
    assert len(metrics_rows(store, "r")) == 6
