"""Buffered unit writes (several units per file, off the caller's thread) and `aosa compact` (atomic merging),
with a crash at every step of both; the `runs` view (one row per run) over the `run_events` log."""

import json
import os
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from aosa.engine.errors import StoreError
from aosa.engine.runtime.recorder import UnitRecorder
from aosa.engine.runtime.workers import Failure
from aosa.engine.store import compaction, generations
from aosa.engine.store.buffered import UnitWriter
from aosa.engine.store.compaction import compact_run
from aosa.engine.store.generations import read_generation
from aosa.engine.store.maintenance import discard_unfinished, forget_errors
from aosa.engine.store.paths import partition
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.rows import map_file, unit_rows
from aosa.engine.store.writer import RunWriter
from aosa.jobs.cli import main as aosa
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams
from aosa.schemas.run_config import RunConfig, parse_methods
from tests.stored import stored_rows, stored_table
from tests.test_store import WHEN, metrics_row

METHODS = ("aosa", "osa:stride=4")
VIEWS = ("run_events", "runs", "metrics", "timings", "maps")


def fake_unit(run_id: str, video: str, method: str, status: str = "ok"):
    """A unit's checked rows: a metrics row, two timings rows and (when ok) a 2x4x4 map."""
    keys = dict(video_id=video, model="r3d", method=method, created_at=WHEN)
    if status != "ok":
        return unit_rows(run_id, [metrics_row(video, method=method, status="error", error_kind="video")])
    saved = map_file(run_id, video, "r3d", method, np.full((2, 4, 4), 0.25, np.float32))
    return unit_rows(run_id, [metrics_row(video, method=method, map_path=saved.path)],
                     [keys | dict(stage=stage, seconds=0.5) for stage in ("explain", "total")],
                     [keys | dict(path=saved.path, shape=[2, 4, 4], dtype="float16")], [saved])


def fill(root: Path, run_id: str, videos: range, max_units: int = 3, errors: tuple[int, ...] = ()) -> None:
    """Units of `videos` x METHODS through a buffered writer, a few per flush; `errors` videos fail."""
    with RunWriter(root, run_id) as run, UnitWriter(run, max_units=max_units, max_seconds=60) as writer:
        for video in videos:
            for method in METHODS:
                writer.add(fake_unit(run_id, f"v{video:03d}", method, "error" if video in errors else "ok"))


def snapshot(root: Path) -> dict[str, list[tuple]]:
    """Every row of every view, in one order."""
    with StoreReader(root).connect() as con:
        return {view: con.sql(f"SELECT * FROM {view} ORDER BY ALL").fetchall() for view in VIEWS}


def loose(root: Path, table: str) -> list[Path]:
    return sorted((root / table).rglob("part-*.parquet"))


def units(root: Path, run_id: str) -> set[tuple[str, str, str]]:
    return StoreReader(root).stored_units(run_id)


def rows(root: Path, name: str, run_id: str | None = None) -> int:
    return stored_table(root, name, run_id).num_rows


def write_run(root: Path, status: str, minutes: int) -> None:
    with RunWriter(root, "r") as writer:
        writer.write_run(dict(run_id="r", config={}, versions={}, status=status,
                              created_at=WHEN + timedelta(minutes=minutes)))


@pytest.fixture
def store(tmp_path) -> Path:
    """Run `r`: 20 videos x 2 methods in flushes of 3 units, two runs rows; run `other`: 2 units."""
    root = tmp_path / "store"
    for status, minutes in (("running", 0), ("finished", 5)):
        write_run(root, status, minutes)
    fill(root, "r", range(20), errors=(7,))
    fill(root, "other", range(1))
    return root.resolve()


def test_units_are_flushed_several_per_file_with_shared_group_names(store):
    metrics = loose(store / "metrics", "run_id=r")
    assert rows(store, "metrics", "r") == 40 and len(metrics) == 27  # 14 flushes of 3 units, by method
    assert {path.parent.name for path in metrics} == {partition("method", method) for method in METHODS}
    siblings = loose(store / "timings", "run_id=r") + loose(store / "maps", "run_id=r")
    assert len(siblings) == 2 * 27 and {path.name for path in siblings} <= {path.name for path in metrics}
    assert rows(store, "timings", "r") == 2 * 38 and rows(store, "maps", "r") == 38
    assert StoreReader(store).load_map(stored_rows(store, "maps", "r")[0]["path"]).dtype == np.float16


def test_add_returns_before_the_disk_is_written_and_stores_on_time(tmp_path, monkeypatch):
    gate = threading.Event()
    write_units = RunWriter.write_units
    monkeypatch.setattr(RunWriter, "write_units", lambda *args: (gate.wait(10), write_units(*args)))
    with RunWriter(tmp_path, "r") as run, UnitWriter(run, max_units=2, max_seconds=0.2) as writer:
        began = time.monotonic()
        for video in range(4):
            writer.add(fake_unit("r", f"v{video}", "aosa"))
        assert time.monotonic() - began < 1 and units(tmp_path, "r") == set()  # the thread waits on the "disk"
        gate.set()
        writer.add(fake_unit("r", "late", "aosa"))
        time.sleep(1.0)  # the full buffers are stored, and max_seconds passes for the late one: stored too
        assert len(units(tmp_path, "r")) == 5 and ("late", "r3d", "aosa") in units(tmp_path, "r")


def test_the_recorder_stores_at_once_unless_buffered(tmp_path):
    config = RunConfig("r", "m.csv", "probe3d", tuple(parse_methods("aosa,osa", MethodParams())))
    failure = Failure("video", "a.mp4: zero bytes")
    with RunWriter(tmp_path, "r") as writer:
        recorder = UnitRecorder(config, writer)
        assert recorder.record_failure(ManifestRow("a", tmp_path / "a.mp4"), config.methods[0], failure) == "error"
        assert units(tmp_path, "r") == {("a", "probe3d", "aosa")}  # no writer started: stored at once
        with recorder.buffered(max_units=100):
            for video in "bcd":
                for spec in config.methods:
                    recorder.record_failure(ManifestRow(video, tmp_path / f"{video}.mp4"), spec, failure)
            assert len(units(tmp_path, "r")) == 1  # buffered
    assert len(units(tmp_path, "r")) == 7 and len(StoreReader(tmp_path).files("metrics", "r")) == 3  # by method


def test_a_failed_write_is_raised_to_the_caller(tmp_path, monkeypatch):
    full = OSError(28, "No space")
    monkeypatch.setattr("aosa.engine.store.paths.os.replace", lambda *args: (_ for _ in ()).throw(full))
    with RunWriter(tmp_path, "r") as run:
        writer = UnitWriter(run, max_units=1)
        writer.add(fake_unit("r", "a", "aosa"))
        with pytest.raises(StoreError, match="storing units of run 'r' in .* failed: .*No space"):
            writer.close()
        with pytest.raises(StoreError, match="No space"):
            writer.add(fake_unit("r", "b", "aosa"))
    assert units(tmp_path, "r") == set()


@pytest.mark.parametrize("crash_at", range(6))
def test_a_crash_in_a_flush_loses_only_the_buffer_and_resume_stores_each_unit_once(tmp_path, monkeypatch, crash_at):
    """Crash at the k-th file of a flush of 2 methods (timings, maps, metrics per method); resume."""
    fill(tmp_path, "r", range(2), max_units=4)
    written, write_parquet = [], RunWriter._write_parquet

    def dying(self, *args) -> None:
        if len(written) == crash_at:
            raise KeyboardInterrupt
        written.append(args[0])
        write_parquet(self, *args)

    monkeypatch.setattr(RunWriter, "_write_parquet", dying)
    with pytest.raises(StoreError):
        fill(tmp_path, "r", range(2, 4), max_units=4)
    monkeypatch.undo()
    stored = units(tmp_path, "r")
    wanted = {(f"v{video:03d}", "r3d", method) for video in range(4) for method in METHODS}
    with RunWriter(tmp_path, "r") as run:  # the resume: computes what is not stored (maps overwritten)
        discard_unfinished(run)
        with UnitWriter(run) as writer:
            for video, _, method in sorted(wanted - stored):
                writer.add(fake_unit("r", video, method))
    assert units(tmp_path, "r") == wanted
    assert rows(tmp_path, "metrics", "r") == 8 and rows(tmp_path, "timings", "r") == 16
    assert rows(tmp_path, "maps", "r") == 8 and not list(tmp_path.rglob("*.tmp"))


def test_compact_merges_every_table_and_reads_the_same_rows(store):
    before = snapshot(store)
    done = compact_run(store, "r", target_rows=25)
    assert done.before["metrics"] == 27 and done.after == {"runs": 1, "metrics": 2, "timings": 4, "maps": 2}
    assert snapshot(store) == before
    record = read_generation(store, partition("run_id", "r"))
    assert record.replaced == {} and sum(map(len, record.files.values())) == 9
    assert not list((store / "metrics" / "run_id=r").rglob("part-*")) and not list(store.rglob("*.tmp"))
    assert compact_run(store, "r", target_rows=25).after == done.after  # nothing left to merge
    assert compact_run(store, "other").after["metrics"] == 2  # one file per method partition


def test_resume_and_retry_errors_after_compaction(store):
    compact_run(store, "r")
    with RunWriter(store, "r") as writer:
        assert discard_unfinished(writer) == 0  # merged timings and maps are not orphans
        assert forget_errors(writer) == 2  # rewrites the merged metrics files without the error rows
    assert ("v007", "r3d", "aosa") not in units(store, "r") and rows(store, "metrics", "r") == 38
    fill(store, "r", range(7, 8))  # the resume stores them again, as loose files beside the merged ones
    fill(store, "r", range(20, 22))
    assert rows(store, "metrics", "r") == 44 and rows(store, "timings", "r") == 88
    before = snapshot(store)
    assert compact_run(store, "r").after["metrics"] == 2 and snapshot(store) == before


def crash(monkeypatch, owner: object, name: str, after: int = 0):
    """Make `owner.name` raise on its call number `after` (0: the first)."""
    real, calls = getattr(owner, name), []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) > after:
            raise KeyboardInterrupt(f"crash in {name}")
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, dying)


CRASHES = {  # where compaction dies: while merging, at the commit, while cleaning up
    "first merged file": (compaction, "write_atomic", 0),
    "third merged file": (compaction, "write_atomic", 2),
    "before the commit rename": (generations, "write_atomic", 0),
    "right after the commit": (compaction, "settle", 0),
    "midway through deleting": (Path, "unlink", 5),
    "before settling the record": (generations, "write_generation", 0),  # settle's call, after the commit's
}


@pytest.mark.parametrize("point", CRASHES)
def test_a_crash_at_any_step_of_compaction_shows_one_set_and_is_recovered(store, monkeypatch, point):
    before = snapshot(store)
    crash(monkeypatch, *CRASHES[point])
    with pytest.raises(KeyboardInterrupt):
        compact_run(store, "r", target_rows=25)
    monkeypatch.undo()
    RunWriter(store, "r").lock.path.unlink(missing_ok=True)  # the crashed process is gone: its lock goes with it
    assert snapshot(store) == before  # the old files or the new ones, never both, never neither
    if point in ("first merged file", "third merged file", "before the commit rename"):
        assert read_generation(store, partition("run_id", "r")) is None
    fill(store, "r", range(20, 21))  # a resume writes beside whatever is visible
    with RunWriter(store, "r") as writer:
        assert discard_unfinished(writer) >= 0 and len(units(store, "r")) == 42
    assert compact_run(store, "r", target_rows=25).after["metrics"] == 2
    assert rows(store, "metrics", "r") == 42 and rows(store, "timings", "r") == 2 * 40
    record = read_generation(store, partition("run_id", "r"))
    on_disk = {path.relative_to(store).as_posix() for path in store.rglob("gen-*.parquet")
               if "run_id=r/" in path.as_posix() or path.parent.name == "run_id=r"}
    assert on_disk == {path for paths in record.files.values() for path in paths} and record.replaced == {}


def test_compaction_is_refused_while_a_writer_holds_the_run(store, capsys):
    with RunWriter(store, "r"):
        code = aosa(["compact", "--store", str(store), "--run-id", "r"])
        assert code == 2 and "run 'r' is being written by pid" in capsys.readouterr().err
        assert aosa(["compact", "--store", str(store)]) == 2  # the other run is compacted
        out, err = capsys.readouterr()
        assert "run 'other': files" in out and "skipped: run 'r'" in err
    assert aosa(["compact", "--store", str(store)]) == 0
    assert "metrics 27 -> 2" in capsys.readouterr().out
    assert aosa(["compact", "--store", str(store), "--run-id", "nope"]) == 2


def test_runs_shows_each_runs_latest_row_and_run_events_every_row(store, capsys):
    assert aosa(["query", "--store", str(store), "SELECT run_id, status FROM runs ORDER BY run_id",
                 "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"run_id": "r", "status": "finished"}]
    events = sorted(stored_rows(store, "run_events", "r"), key=lambda row: row["created_at"])
    assert [row["status"] for row in events] == ["running", "finished"]
    write_run(store, "interrupted", 60)
    compact_run(store, "r")
    (row,) = stored_rows(store, "runs")
    assert row["status"] == "interrupted" and rows(store, "run_events") == 3


def test_a_reader_lists_again_when_a_compaction_commits_meanwhile(store, monkeypatch):
    """visible_files reads the generation record before and after listing; a change means list again."""
    reads = []
    real = generations.current_generations

    def racing(root, run_partition=None):
        reads.append(1)
        if len(reads) == 1:
            return {}
        return real(root, run_partition)

    compact_run(store, "r", target_rows=25)
    monkeypatch.setattr(generations, "current_generations", racing)
    assert len(StoreReader(store).files("metrics", "r")) == 2 and len(reads) == 4


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_a_20000_unit_run_compacts_to_few_files_and_counts_5x_faster(tmp_path, monkeypatch, capsys):
    """The issue's store: 20,000 units, one metrics file each; measured before and after `aosa compact`."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # synthesis speed only; reads are what is measured
    store = StoreReader(tmp_path)
    methods = ("aosa", "aosa-approx", "osa", "aosa:top_k=0")
    with RunWriter(tmp_path, "big") as run, UnitWriter(run, max_units=1) as writer:  # a file per unit, as before #12
        for video in range(5000):
            for index, method in enumerate(methods):
                writer.add(unit_rows("big", [metrics_row(f"v{video:05d}", method=method, overall=video % 7 + index)]))
    count, average = "SELECT count(*) FROM metrics", "SELECT method, avg(overall) FROM metrics GROUP BY 1 ORDER BY 1"
    ordered = "SELECT * FROM metrics ORDER BY video_id, method"

    def timed(sql: str, tries: int) -> tuple[float, list]:
        best, rows = float("inf"), []
        for _ in range(tries):
            began = time.perf_counter()
            with store.connect() as con:
                rows = con.sql(sql).fetchall()
            best = min(best, time.perf_counter() - began)
        return best, rows

    files_before = len(store.files("metrics"))
    (count_before, counted), (average_before, averaged) = timed(count, 1), timed(average, 1)  # tens of seconds
    rows_before = timed(ordered, 1)[1]
    compacted = compaction.compact_run(tmp_path, "big")
    (count_after, counted_after), (average_after, averaged_after) = timed(count, 3), timed(average, 3)
    assert files_before == 20_000 and compacted.after["metrics"] <= 50 and counted == counted_after == [(20_000,)]
    assert averaged_after == averaged and timed(ordered, 1)[1] == rows_before
    with capsys.disabled():
        print(f"\nmetrics files {files_before} -> {compacted.after['metrics']}; count(*) {count_before:.2f} s -> "
              f"{count_after:.3f} s ({count_before / count_after:.0f}x); per-method average {average_before:.2f} s -> "
              f"{average_after:.3f} s ({average_before / average_after:.0f}x)")
    assert count_before / count_after >= 5
