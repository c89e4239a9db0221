"""The result store: atomic hive-partitioned Parquet, resume bookkeeping, schema evolution, saved maps."""

import json
import os
import platform
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aosa.engine.errors import ConfigError
from aosa.engine.store.maintenance import discard_unfinished
from aosa.engine.store.results import ResultStore, partition_value
from aosa.jobs import evaluate as evaluate_job
from aosa.schemas.tables import SCHEMA_VERSION, TABLES, TableError, build_table

WHEN = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def metrics_row(video: str, model: str = "r3d", method: str = "aosa", **extra) -> dict:
    row = dict(video_id=video, model=model, method=method, status="ok", params={"stride": 8}, label=1, target=1,
               predicted=1, score=0.9, deletion_auc=0.1, insertion_auc=0.6, overall=0.5,
               deletion_curve=np.linspace(1, 0, 29, dtype=np.float32), spt_hits=3, spt_frames=4,
               seconds_total=1.25, seconds_model=1.0, n_forward=197, created_at=WHEN)
    return row | extra


def unit(store: ResultStore, run_id: str, video: str, model: str = "r3d", method: str = "aosa") -> dict:
    """Write one unit (a map, its timings, its metrics row); returns the metrics row."""
    path = store.save_map(run_id, video, model, method, np.full((2, 4, 4), 0.5, np.float32))
    keys = dict(video_id=video, model=model, method=method, created_at=WHEN)
    row = metrics_row(video, model, method, map_path=path)
    store.write_unit(run_id, [row], [keys | dict(stage=stage, seconds=0.5) for stage in ("flow", "model")],
                     [keys | dict(path=path, shape=[2, 4, 4], dtype="float16")])
    return row


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_units_read_back_equal_to_what_was_written(tmp_path):
    store = ResultStore(tmp_path)
    rows = [unit(store, "run1", video) for video in ("a", "b")]
    unit(store, "run2", "a")
    got = store.table("metrics", "run1").sort_by("video_id")
    assert got.equals(build_table("metrics", [row | {"run_id": "run1"} for row in rows]))
    assert got.schema.metadata == {b"aosa_schema_version": str(SCHEMA_VERSION).encode()}
    assert store.table("metrics").num_rows == 3
    assert store.table("timings", "run1").num_rows == 4 and store.table("maps", "run2").num_rows == 1
    assert got.column("deletion_curve")[0].values.to_numpy().tolist() == pytest.approx(np.linspace(1, 0, 29))
    assert len(list((tmp_path / "metrics" / "run_id=run1" / "method=aosa").glob("part-*.parquet"))) == 2


def test_runs_table_keeps_config_json_and_versions(tmp_path):
    store = ResultStore(tmp_path)
    store.write_run(dict(run_id="r", config={"methods": ["aosa"]}, versions={"torch": "2.14"}, git_sha=None,
                         host="h", device="cpu", status="running", created_at=WHEN))
    (row,) = store.table("runs").to_pylist()
    assert row["config"] == '{"methods": ["aosa"]}' and row["schema_version"] == SCHEMA_VERSION
    assert row["created_at"] == WHEN and row["git_sha"] is None


def test_empty_store_reads_as_empty_tables_with_every_column(tmp_path):
    store = ResultStore(tmp_path / "nothing")
    for name, schema in TABLES.items():
        table = store.table(name)
        assert table.num_rows == 0 and table.schema.names == schema.names
    assert store.stored_units("run") == set() and parquet_files(tmp_path) == []


def test_temp_files_of_a_crash_are_never_read(tmp_path):
    store = ResultStore(tmp_path)
    unit(store, "run", "a")
    folder = tmp_path / "metrics" / "run_id=run" / "method=aosa"
    pq.write_table(build_table("metrics", [metrics_row("ghost") | {"run_id": "run"}]),
                   folder / ".part-ghost.parquet.1234.tmp")
    (folder / ".part-torn.parquet.5678.tmp").write_bytes(b"PAR1 torn")
    assert store.stored_units("run") == {("a", "r3d", "aosa")}
    assert store.table("metrics").column("video_id").to_pylist() == ["a"]
    assert discard_unfinished(store, "run") == 2 and not list(folder.glob(".*"))


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    monkeypatch.setattr("aosa.engine.store.paths.os.replace", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        unit(store, "run", "a")
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def test_resume_skips_stored_units_and_discards_unfinished_ones(tmp_path, monkeypatch):
    store = ResultStore(tmp_path)
    unit(store, "run", "a")
    unit(store, "run", "b", method="aosa:top_k=0")
    write_parquet = store._write_parquet

    def crash_before_metrics(name: str, *args) -> None:
        if name == "metrics":
            raise KeyboardInterrupt
        write_parquet(name, *args)

    monkeypatch.setattr(store, "_write_parquet", crash_before_metrics)
    with pytest.raises(KeyboardInterrupt):
        unit(store, "run", "c")  # dies after its timings and maps files, before its metrics file
    monkeypatch.undo()
    wanted = {(video, "r3d", method) for video in "abc" for method in ("aosa", "aosa:top_k=0")}
    assert store.stored_units("run") == {("a", "r3d", "aosa"), ("b", "r3d", "aosa:top_k=0")}
    assert store.table("timings", "run").num_rows == 6
    assert discard_unfinished(store, "run") == 2  # unit c's timings and maps files
    for video, model, method in sorted(wanted - store.stored_units("run")):
        unit(store, "run", video, model, method)
    assert store.stored_units("run") == wanted and store.stored_units("other") == set()
    metrics = store.table("metrics", "run")
    assert metrics.num_rows == len(wanted) == store.table("timings").num_rows / 2


def test_partition_values_with_path_characters_round_trip(tmp_path):
    store = ResultStore(tmp_path)
    run_id, video, method = "2025/01:night=1", "../clips/a b.mp4", "aosa:top_k=0,fill=blur"
    unit(store, run_id, video, method=method)
    assert store.stored_units(run_id) == {(video, "r3d", method)}
    (row,) = store.table("metrics", run_id).to_pylist()
    assert (row["run_id"], row["video_id"], row["method"], row["method_name"]) == (run_id, video, method, "aosa")
    folders = {path.parent.relative_to(tmp_path).as_posix() for path in parquet_files(tmp_path)}
    assert f"metrics/run_id={partition_value(run_id)}/method={partition_value(method)}" in folders
    for value in (run_id, video, method, ".hidden", ".."):
        quoted = partition_value(value)
        assert unquote(quoted) == value and "/" not in quoted and not quoted.startswith(".")
    assert all(path.is_relative_to(tmp_path) for path in tmp_path.rglob("*"))


def test_old_files_lacking_a_column_read_it_as_null(tmp_path):
    store = ResultStore(tmp_path)
    unit(store, "run", "new")
    old = build_table("metrics", [metrics_row("old") | {"run_id": "run"}]).drop_columns(["spt_hits", "score"])
    old = old.append_column("legacy", pa.array(["x"]))
    pq.write_table(old, tmp_path / "metrics" / "run_id=run" / "method=aosa" / "part-old.parquet")
    got = {row["video_id"]: row for row in store.table("metrics", "run").to_pylist()}
    assert got["old"]["spt_hits"] is None and got["old"]["score"] is None and got["old"]["legacy"] == "x"
    assert got["new"]["spt_hits"] == 3 and got["new"]["legacy"] is None


def test_map_saved_as_float16_round_trips(tmp_path):
    store = ResultStore(tmp_path)
    saliency = np.random.default_rng(0).random((16, 112, 112), dtype=np.float32)
    path = store.save_map("run", "v/1", "probe3d", "aosa-approx:relu=false", saliency)
    assert not Path(path).is_absolute() and path.startswith("maps/run_id=run/") and path.endswith(".npy")
    loaded = store.load_map(path)
    assert loaded.dtype == np.float16 and loaded.shape == saliency.shape
    np.testing.assert_allclose(loaded, saliency, atol=1e-3)
    with pytest.raises(ConfigError, match="outside"):
        store.load_map("../../etc/passwd")
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_rows_name_the_table_and_column(tmp_path):
    store = ResultStore(tmp_path)
    with pytest.raises(TableError, match="table metrics: column 'spt_hits'"):
        store.write_unit("run", [metrics_row("a", spt_hits="three")])
    with pytest.raises(TableError, match="table timings: unknown column 'secs'"):
        store.write_unit("run", [metrics_row("a")], [dict(video_id="a", model="m", method="aosa", secs=1.0)])
    with pytest.raises(TableError, match="table metrics: column 'spt_hits'"):
        store.write_unit("run", [metrics_row("a", spt_hits="three")], [dict(video_id="a", model="m", method="aosa",
                                                                            stage="flow", seconds=1.0)])
    with pytest.raises(TableError, match="table metrics: column 'status' needs a value"):
        store.write_unit("run", [metrics_row("a", status=None)])
    with pytest.raises(ConfigError, match="rows of run 'other'"):
        store.write_unit("run", [metrics_row("a", run_id="other")])
    assert store.stored_units("run") == set() and parquet_files(tmp_path) == []


def test_one_writer_per_run_and_a_dead_holders_lock_is_taken_over(tmp_path):
    store = ResultStore(tmp_path)
    with store.lock("r") as held:
        assert json.loads(held.path.read_text())["pid"] == os.getpid()
        with pytest.raises(ConfigError, match=f"run 'r' is being written by pid {os.getpid()} on "):
            store.lock("r").__enter__()
        with store.lock("other run"):  # other runs are free
            pass
    assert not held.path.exists()  # released
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    held.path.write_text(json.dumps({"host": platform.node(), "pid": int(gone.stdout), "since": "2026-01-01T00:00:00"}))
    with store.lock("r"):  # its process has exited: taken over
        assert json.loads(held.path.read_text())["pid"] == os.getpid()
    held.path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "2026-01-01T00:00:00"}))
    with pytest.raises(ConfigError, match=f"on elsewhere .* delete {held.path}"):
        store.lock("r").__enter__()


def test_evaluate_on_a_held_run_id_is_refused_in_seconds_before_ray_starts(tmp_path, capsys, monkeypatch):
    store = ResultStore(tmp_path / "store")
    manifest = tmp_path / "m.csv"
    manifest.write_text("video_id,path\nv,v.mp4\n")
    connected = []
    monkeypatch.setattr(evaluate_job, "connect", lambda *args: connected.append(args))
    with store.lock("busy"):
        began = time.monotonic()
        code = evaluate_job.main(["--manifest", str(manifest), "--model", "probe3d", "--store", str(store.root),
                                  "--run-id", "busy"])
    assert code == 2 and time.monotonic() - began < 10 and connected == []  # refused before joining Ray
    assert "run 'busy' is being written by pid" in capsys.readouterr().err
