"""The result store: atomic hive-partitioned Parquet, resume bookkeeping, schema evolution, saved maps, writes
only by the holder of the run."""

from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aosa.engine.errors import ConfigError, StoreError
from aosa.engine.store.maintenance import discard_unfinished
from aosa.engine.store.paths import partition_value
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.rows import map_file
from aosa.engine.store.writer import RunWriter
from aosa.schemas.tables import SCHEMA_VERSION, TABLES, TableError, build_table
from tests.stored import stored_rows, stored_table, write_unit

WHEN = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)


def metrics_row(video: str, model: str = "r3d", method: str = "aosa", **extra) -> dict:
    row = dict(video_id=video, model=model, method=method, status="ok", params={"stride": 8}, label=1, target=1,
               predicted=1, score=0.9, deletion_auc=0.1, insertion_auc=0.6, overall=0.5,
               deletion_curve=np.linspace(1, 0, 29, dtype=np.float32), spt_hits=3, spt_frames=4,
               seconds_total=1.25, seconds_model=1.0, n_forward=197, created_at=WHEN)
    return row | extra


def unit(root: Path, run_id: str, video: str, model: str = "r3d", method: str = "aosa") -> dict:
    """Write one unit (a map, its timings, its metrics row) as the run's writer; returns the metrics row."""
    saved = map_file(run_id, video, model, method, np.full((2, 4, 4), 0.5, np.float32))
    keys = dict(video_id=video, model=model, method=method, created_at=WHEN)
    row = metrics_row(video, model, method, map_path=saved.path)
    with RunWriter(root, run_id) as writer:
        write_unit(writer, [row], [keys | dict(stage=stage, seconds=0.5) for stage in ("flow", "model")],
                   [keys | dict(path=saved.path, shape=[2, 4, 4], dtype="float16")], [saved])
    return row


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def test_units_read_back_equal_to_what_was_written(tmp_path):
    rows = [unit(tmp_path, "run1", video) for video in ("a", "b")]
    unit(tmp_path, "run2", "a")
    got = sorted(stored_rows(tmp_path, "metrics", "run1"), key=lambda row: row["video_id"])
    assert got == build_table("metrics", [row | {"run_id": "run1"} for row in rows]).to_pylist()
    for path in parquet_files(tmp_path):
        assert pq.read_schema(path).metadata == {b"aosa_schema_version": str(SCHEMA_VERSION).encode()}
    assert stored_table(tmp_path, "metrics").num_rows == 3
    assert stored_table(tmp_path, "timings", "run1").num_rows == 4
    assert stored_table(tmp_path, "maps", "run2").num_rows == 1
    assert got[0]["deletion_curve"] == pytest.approx(np.linspace(1, 0, 29))
    assert len(list((tmp_path / "metrics" / "run_id=run1" / "method=aosa").glob("part-*.parquet"))) == 2


def test_runs_table_keeps_config_json_and_versions(tmp_path):
    with RunWriter(tmp_path, "r") as writer:
        writer.write_run(dict(run_id="r", config={"methods": ["aosa"]}, versions={"torch": "2.14"}, git_sha=None,
                              host="h", device="cpu", status="running", created_at=WHEN))
    (row,) = stored_rows(tmp_path, "runs")
    assert row["config"] == '{"methods": ["aosa"]}' and row["schema_version"] == SCHEMA_VERSION
    assert row["created_at"] == WHEN and row["git_sha"] is None
    assert StoreReader(tmp_path).run_configs("r") == [{"methods": ["aosa"]}]


def test_nothing_is_written_without_holding_the_run(tmp_path):
    writer = RunWriter(tmp_path, "r")
    with pytest.raises(StoreError, match="without holding its lock"):
        write_unit(writer, [metrics_row("a")])
    with pytest.raises(StoreError, match="without holding its lock"):
        discard_unfinished(writer)
    assert parquet_files(tmp_path) == []


def test_empty_store_reads_as_empty_tables_with_every_column(tmp_path):
    for name, schema in TABLES.items():
        table = stored_table(tmp_path / "nothing", name)
        assert table.num_rows == 0 and table.schema.names == schema.names
    assert StoreReader(tmp_path / "nothing").stored_units("run") == set() and parquet_files(tmp_path) == []


def test_temp_files_of_a_crash_are_never_read(tmp_path):
    unit(tmp_path, "run", "a")
    folder = tmp_path / "metrics" / "run_id=run" / "method=aosa"
    pq.write_table(build_table("metrics", [metrics_row("ghost") | {"run_id": "run"}]),
                   folder / ".part-ghost.parquet.1234.tmp")
    (folder / ".part-torn.parquet.5678.tmp").write_bytes(b"PAR1 torn")
    assert StoreReader(tmp_path).stored_units("run") == {("a", "r3d", "aosa")}
    assert stored_table(tmp_path, "metrics").column("video_id").to_pylist() == ["a"]
    with RunWriter(tmp_path, "run") as writer:
        assert discard_unfinished(writer) == 2 and not list(folder.glob(".*"))


def test_a_failed_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr("aosa.engine.store.paths.os.replace", lambda *args: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        unit(tmp_path, "run", "a")
    assert [path for path in tmp_path.rglob("*") if path.is_file()] == []


def test_resume_skips_stored_units_and_discards_unfinished_ones(tmp_path, monkeypatch):
    store = StoreReader(tmp_path)
    unit(tmp_path, "run", "a")
    unit(tmp_path, "run", "b", method="aosa:top_k=0")
    write_parquet = RunWriter._write_parquet

    def crash_before_metrics(self, name: str, *args) -> None:
        if name == "metrics":
            raise KeyboardInterrupt
        write_parquet(self, name, *args)

    monkeypatch.setattr(RunWriter, "_write_parquet", crash_before_metrics)
    with pytest.raises(KeyboardInterrupt):
        unit(tmp_path, "run", "c")  # dies after its timings and maps files, before its metrics file
    monkeypatch.undo()
    wanted = {(video, "r3d", method) for video in "abc" for method in ("aosa", "aosa:top_k=0")}
    assert store.stored_units("run") == {("a", "r3d", "aosa"), ("b", "r3d", "aosa:top_k=0")}
    assert stored_table(tmp_path, "timings", "run").num_rows == 6
    with RunWriter(tmp_path, "run") as writer:
        assert discard_unfinished(writer) == 2  # unit c's timings and maps files
    for video, model, method in sorted(wanted - store.stored_units("run")):
        unit(tmp_path, "run", video, model, method)
    assert store.stored_units("run") == wanted and store.stored_units("other") == set()
    metrics = stored_table(tmp_path, "metrics", "run")
    assert metrics.num_rows == len(wanted) == stored_table(tmp_path, "timings").num_rows / 2


def test_partition_values_with_path_characters_round_trip(tmp_path):
    run_id, video, method = "2025/01:night=1", "../clips/a b.mp4", "aosa:top_k=0,fill=blur"
    unit(tmp_path, run_id, video, method=method)
    assert StoreReader(tmp_path).stored_units(run_id) == {(video, "r3d", method)}
    (row,) = stored_rows(tmp_path, "metrics", run_id)
    assert (row["run_id"], row["video_id"], row["method"], row["method_name"]) == (run_id, video, method, "aosa")
    folders = {path.parent.relative_to(tmp_path).as_posix() for path in parquet_files(tmp_path)}
    assert f"metrics/run_id={partition_value(run_id)}/method={partition_value(method)}" in folders
    for value in (run_id, video, method, ".hidden", ".."):
        quoted = partition_value(value)
        assert unquote(quoted) == value and "/" not in quoted and not quoted.startswith(".")
    assert all(path.is_relative_to(tmp_path) for path in tmp_path.rglob("*"))
    assert StoreReader(tmp_path).run_ids() == [run_id]


def test_old_files_lacking_a_column_read_it_as_null(tmp_path):
    unit(tmp_path, "run", "new")
    old = build_table("metrics", [metrics_row("old") | {"run_id": "run"}]).drop_columns(["spt_hits", "score"])
    old = old.append_column("legacy", pa.array(["x"]))
    pq.write_table(old, tmp_path / "metrics" / "run_id=run" / "method=aosa" / "part-old.parquet")
    got = {row["video_id"]: row for row in stored_rows(tmp_path, "metrics", "run")}
    assert got["old"]["spt_hits"] is None and got["old"]["score"] is None and got["old"]["legacy"] == "x"
    assert got["new"]["spt_hits"] == 3 and got["new"]["legacy"] is None


def test_map_saved_as_float16_round_trips(tmp_path):
    saliency = np.random.default_rng(0).random((16, 112, 112), dtype=np.float32)
    saved = map_file("run", "v/1", "probe3d", "aosa-approx:relu=false", saliency)
    with RunWriter(tmp_path, "run") as writer:
        write_unit(writer, [metrics_row("v/1", "probe3d", "aosa-approx:relu=false", map_path=saved.path)],
                   files=[saved])
    assert not Path(saved.path).is_absolute() and saved.path.startswith("maps/run_id=run/")
    assert saved.path.endswith(".npy")
    loaded = StoreReader(tmp_path).load_map(saved.path)
    assert loaded.dtype == np.float16 and loaded.shape == saliency.shape
    np.testing.assert_allclose(loaded, saliency, atol=1e-3)
    with pytest.raises(ConfigError, match="outside"):
        StoreReader(tmp_path).load_map("../../etc/passwd")
    assert not list(tmp_path.rglob("*.tmp"))


def test_bad_rows_name_the_table_and_column(tmp_path):
    with RunWriter(tmp_path, "run") as writer:
        with pytest.raises(TableError, match="table metrics: column 'spt_hits'"):
            write_unit(writer, [metrics_row("a", spt_hits="three")])
        with pytest.raises(TableError, match="table timings: unknown column 'secs'"):
            write_unit(writer, [metrics_row("a")], [dict(video_id="a", model="m", method="aosa", secs=1.0)])
        with pytest.raises(TableError, match="table metrics: column 'spt_hits'"):
            write_unit(writer, [metrics_row("a", spt_hits="three")], [dict(video_id="a", model="m", method="aosa",
                                                                             stage="flow", seconds=1.0)])
        with pytest.raises(TableError, match="table metrics: column 'status' needs a value"):
            write_unit(writer, [metrics_row("a", status=None)])
        with pytest.raises(ConfigError, match="rows of run 'other'"):
            write_unit(writer, [metrics_row("a", run_id="other")])
    assert StoreReader(tmp_path).stored_units("run") == set() and parquet_files(tmp_path) == []
