"""Faults of DESIGN.md section 9: bad inputs become error rows while the rest of the run completes, and a
model actor killed mid-run is restarted with its shard redone, nothing lost or stored twice."""

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from torch import nn

from aosa.engine.datasets.manifests import write_manifest
from aosa.engine.runtime import evaluation
from aosa.engine.runtime.pool import ActorPool
from aosa.jobs.evaluate import EXIT_UNITS_FAILED, main
from aosa.schemas.manifest import ManifestRow
from tests.stored import stored_rows
from tests.videos import moving_square, write_video


def bad_and_good_videos(root: Path) -> tuple[list[ManifestRow], dict[str, str]]:
    """Manifest rows for good clips and for each bad input; expected error kind per bad video id."""
    square = moving_square(20, 96, 128)
    good = write_video(root / "good.mp4", square)
    text = root / "notes.mp4"
    text.write_text("not a video\n")
    empty = root / "empty.mp4"
    empty.touch()
    webm = write_video(root / "whole.webm", square, "libvpx-vp9")
    truncated = root / "truncated.webm"
    truncated.write_bytes(webm.read_bytes()[: webm.stat().st_size // 2])
    ffv1 = write_video(root / "lossless.mkv", square, "ffv1")
    unknown = root / "unknown.mkv"
    unknown.write_bytes(ffv1.read_bytes().replace(b"V_FFV1", b"V_QQQQ"))
    rows = [
        ManifestRow("good", good, label=0, boxes=((0, 10, 10, 40, 40),)),
        ManifestRow("odd-size", write_video(root / "odd.mov", moving_square(20, 9, 17, side=4), "png"), label=1),
        ManifestRow("grey", write_video(root / "grey.mov", moving_square(20, 48, 64)[..., 0], "png", pix_fmt="gray"),
                    label=2),
        ManifestRow("alpha", write_video(root / "alpha.mov", np.concatenate(
            [moving_square(20, 48, 64), np.full((20, 48, 64, 1), 200, np.uint8)], axis=3), "png", pix_fmt="rgba"),
                    label=3),
        ManifestRow("missing", root / "missing.mp4", label=0),
        ManifestRow("empty", empty, label=0),
        ManifestRow("text", text, label=0),
        ManifestRow("truncated", truncated, label=0),
        ManifestRow("unknown-codec", unknown, label=0),
        ManifestRow("short", write_video(root / "short.mp4", moving_square(8, 96, 128)), label=0),
        ManifestRow("tiny", write_video(root / "tiny.mov", moving_square(20, 40, 1, side=1), "png"), label=0),
        ManifestRow("bad-label", good, label=9),
        ManifestRow("box-outside", good, label=0, boxes=((0, 500, 10, 540, 40),)),
    ]
    expected = {"missing": "missing_file", "empty": "empty_file", "text": "not_video", "truncated": "decode_error",
                "unknown-codec": "unsupported_codec", "short": "too_few_frames", "tiny": "bad_resolution",
                "bad-label": "label", "box-outside": "bad_box"}
    return rows, expected


def test_every_bad_input_is_an_error_row_and_the_good_ones_complete(ray_cluster, tmp_path):
    rows, expected = bad_and_good_videos(tmp_path)
    manifest = tmp_path / "manifest.csv"
    write_manifest(rows, manifest)
    store = tmp_path / "store"
    code = main(["--manifest", str(manifest), "--model", "probe3d", "--methods", "aosa-approx", "--store",
                 str(store), "--run-id", "bad", "--model-actors", "1"])
    assert code == EXIT_UNITS_FAILED
    stored = {row["video_id"]: row for row in stored_rows(store, "metrics", "bad")}
    assert set(stored) == {row.video_id for row in rows}
    for video_id, row in stored.items():
        if video_id in expected:
            assert (row["status"], row["error_kind"]) == ("error", expected[video_id]), row
            assert row["error"] and "\n" not in row["error"] and "Traceback" not in row["error"]
        else:
            assert row["status"] == "ok" and row["deletion_auc"] is not None, row
    assert str(tmp_path / "missing.mp4") in stored["missing"]["error"]
    assert "label 9" in stored["bad-label"]["error"] and "500" in stored["box-outside"]["error"]


class RecordedPool(ActorPool):
    """The ActorPool of the runs a test starts, kept so the test can reach the actors it created."""

    created: list[ActorPool] = []

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        RecordedPool.created.append(self)


def actor_pid(actor: ray.actor.ActorHandle) -> int:
    """The pid of the process an actor runs in, asked of the actor itself (after its calls queued before)."""
    return ray.get(actor.__ray_call__.remote(lambda worker: os.getpid()), timeout=300)


def kill_one_model_actor_when(store: Path, pids: list[int]) -> None:
    """Find the pid of the run's first model actor through its handle, wait for the first finished map (other
    shards in flight), SIGKILL that process, then note the pid of the process Ray restarted the actor in."""
    deadline = time.monotonic() + 300
    while not RecordedPool.created and time.monotonic() < deadline:
        time.sleep(0.2)
    actor = RecordedPool.created[0].models[0]
    pids.append(actor_pid(actor))
    while not list((store / "maps").rglob("*.npy")) and time.monotonic() < deadline:  # maps land unbuffered
        time.sleep(0.2)
    os.kill(pids[0], signal.SIGKILL)
    pids.append(actor_pid(actor))  # answered by the restarted actor: Ray retries the call once it is back


def test_killed_model_actor_is_restarted_and_its_shard_redone(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.setattr(evaluation, "ActorPool", RecordedPool)
    monkeypatch.setattr(RecordedPool, "created", [])
    rows = [ManifestRow(f"v{i}", write_video(tmp_path / f"v{i}.mp4", moving_square(18, 96, 128, step=2 + i)),
                        label=i) for i in range(3)]
    manifest = tmp_path / "manifest.csv"
    write_manifest(rows, manifest)
    store = tmp_path / "store"
    pids: list[int] = []
    killer = threading.Thread(target=kill_one_model_actor_when, args=(store, pids))
    killer.start()
    code = main(["--manifest", str(manifest), "--model", "probe3d", "--methods", "osa", "--store", str(store),
                 "--run-id", "kill", "--model-actors", "2", "--max-in-flight", "2"])
    killer.join()
    assert len(pids) == 2 and pids[0] != pids[1], f"the model actor was not killed and restarted: pids {pids}"
    assert code == 0
    stored = stored_rows(store, "metrics", "kill")
    keys = [(row["video_id"], row["method"]) for row in stored]
    assert len(keys) == len(set(keys)) == 3 and all(row["status"] == "ok" for row in stored)


class PickyModel(nn.Module):
    """Refuses bright clips with a RuntimeError and gives NaN logits for mid-grey ones, as a model can on one
    odd clip of a dataset."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 4)

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        if bool(clip.mean() > 1.0):
            raise RuntimeError("picky model: this clip is too bright")
        logits = self.fc(self.conv(clip).mean(dim=(2, 3, 4)))
        if bool(clip.mean() > 0.2):
            return logits * float("nan")
        return logits


def picky_model(root: Path) -> Path:
    """A TorchScript file of PickyModel with its sidecar (8 frames at 32 x 32)."""
    path = root / "picky.pt"
    torch.jit.script(PickyModel().eval()).save(str(path))
    (root / "picky.json").write_text(json.dumps({"frames": 8, "size": [32, 32]}))
    return path


def run_state(store: Path, run_id: str) -> str:
    runs = stored_rows(store, "runs", run_id)
    return max(runs, key=lambda row: row["created_at"])["status"]


@pytest.mark.slow
def test_a_model_that_raises_and_a_bad_file_are_rows_and_the_run_ends_failed(ray_cluster, tmp_path, capfd):
    dark = moving_square(12, 48, 64)
    rows = [ManifestRow("dark", write_video(tmp_path / "dark.mp4", dark), label=0),
            ManifestRow("bright", write_video(tmp_path / "bright.mp4", np.full_like(dark, 255)), label=1),
            ManifestRow("grey", write_video(tmp_path / "grey.mp4", np.full_like(dark, 150)), label=3),
            ManifestRow("corrupt", tmp_path / "corrupt.mp4", label=2)]
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    manifest = tmp_path / "manifest.csv"
    write_manifest(rows, manifest)
    store = tmp_path / "store"
    args = ["--manifest", str(manifest), "--model", str(picky_model(tmp_path)), "--methods", "osa,aosa-approx",
            "--store", str(store), "--run-id", "picky", "--model-actors", "1"]
    assert main(args) == EXIT_UNITS_FAILED
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    assert out.strip().splitlines()[-1].startswith("run picky: 2 units ok, 6 failed")
    stored = stored_rows(store, "metrics", "picky")
    assert sorted((r["video_id"], r["status"], r["error_kind"]) for r in stored) == sorted(
        [("dark", "ok", None)] * 2 + [("bright", "error", "RuntimeError")] * 2
        + [("grey", "error", "non_finite_map")] * 2 + [("corrupt", "error", "not_video")] * 2)
    bright = [r for r in stored if r["video_id"] == "bright"]
    assert all("too bright" in r["error"] and str(tmp_path / "bright.mp4") in r["error"] for r in bright)
    assert run_state(store, "picky") == "failed"
    assert main(args) == 0 and run_state(store, "picky") == "finished"  # a resume keeps the error rows
    assert len(stored_rows(store, "metrics", "picky")) == 8
    assert main([*args, "--retry-errors"]) == EXIT_UNITS_FAILED  # asked to: the failed units run again, once
    again = stored_rows(store, "metrics", "picky")
    assert sorted((r["video_id"], r["status"]) for r in again) == sorted((r["video_id"], r["status"]) for r in stored)
