"""`aosa query` (read-only SQL over the store, in a child process bounded in memory, time and answer size),
`aosa report` (Table I), and stores at paths DuckDB would read as glob patterns."""

import csv
import io
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from aosa.engine.datasets.manifests import write_manifest
from aosa.engine.store.generations import visible_files
from aosa.engine.store.query import CHILD_ENV, run_query
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import QueryError, QueryLimits
from aosa.engine.store.writer import RunWriter
from aosa.jobs.cli import main as aosa
from aosa.jobs.evaluate import EXIT_UNITS_FAILED
from aosa.jobs.evaluate import main as evaluate
from aosa.jobs.query import main as query
from aosa.jobs.report import main as report
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.tables import TABLES
from tests.stored import write_unit
from tests.videos import moving_square, write_video

ROOT = Path(__file__).resolve().parent.parent

MODELS = ("r2plus1d", "r3d")  # the report orders models and methods by name
METHODS = ("aosa", "aosa-approx", "osa:stride=4")
START = datetime(2025, 3, 1, tzinfo=UTC)


def cell_values(method_index: int, model_index: int) -> dict:
    """Distinct numbers per cell, so each one can be found in the report."""
    base = 0.1 * method_index + 0.01 * model_index
    return dict(deletion_auc=round(0.101 + base, 3), insertion_auc=round(0.602 + base, 3),
                overall=round(0.501 + base / 2, 3), seconds_total=round(1.5 + base * 10, 3))


def write_run(root: Path, run_id: str, started: datetime, scale: float = 1.0) -> None:
    """Two models x three methods x two videos, and one failed unit; osa has no boxes (S-PT '-')."""
    with RunWriter(root, run_id) as writer:
        writer.write_run(dict(run_id=run_id, config={"scale": scale}, versions={}, status="done", created_at=started))
        for k, method in enumerate(METHODS):
            for m, model in enumerate(MODELS):
                rows = [dict(video_id=f"v{v}", model=model, method=method, status="ok", params={},
                             spt_hits=v + k, spt_frames=0 if method.startswith("osa") else 4,
                             created_at=started + timedelta(seconds=1),
                             **{key: value * scale for key, value in cell_values(k, m).items()}) for v in range(2)]
                write_unit(writer, rows)
        write_unit(writer, [dict(video_id="broken", model=MODELS[0], method="aosa", status="error",
                                 error_kind="video", error="zero bytes", params={})])


@pytest.fixture
def store_dir(tmp_path):
    root = tmp_path / "store"
    write_run(root, "older", START - timedelta(days=1), scale=0.5)
    write_run(root, "latest", START)
    return root


def run_query_cli(capsys, root, sql: str, *options: str) -> tuple[int, str, str]:
    code = query(["--store", str(root), sql, *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_select_on_every_view_and_formats(store_dir, capsys):
    counts = {"runs": 2, "metrics": 2 * (12 + 1), "timings": 0, "maps": 0}
    for name, expected in counts.items():
        code, out, _ = run_query_cli(capsys, store_dir, f"SELECT count(*) AS n FROM {name}", "--format", "json")
        assert code == 0 and json.loads(out) == [{"n": expected}]
    code, out, _ = run_query_cli(capsys, store_dir, "SELECT video_id, method, overall, created_at FROM metrics "
                             "WHERE run_id = 'latest' AND status = 'ok' ORDER BY method, model, video_id",
                             "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 12 and rows[0]["method"] == "aosa"
    assert float(rows[0]["overall"]) == cell_values(0, 0)["overall"]
    assert datetime.fromisoformat(rows[0]["created_at"]) == START + timedelta(seconds=1)
    code, out, _ = run_query_cli(capsys, store_dir, "SELECT method, count(*) AS n FROM metrics GROUP BY method "
                             "ORDER BY method")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["method", "n"] and lines[2].split() == ["aosa", "10"]


def test_empty_store_has_queryable_views_with_every_column(tmp_path, capsys):
    for name, schema in TABLES.items():
        code, out, _ = run_query_cli(capsys, tmp_path, f"SELECT * FROM {name}", "--format", "csv")
        assert code == 0 and out.strip().split(",") == schema.names
    code, out, _ = run_query_cli(capsys, tmp_path, "SELECT count(*) AS n, max(deletion_auc) AS d FROM metrics",
                             "--format", "json")
    assert json.loads(out) == [{"n": 0, "d": None}]


def test_lists_and_old_files_lacking_columns(tmp_path, capsys):
    with RunWriter(tmp_path, "r") as writer:
        write_unit(writer, [dict(video_id="v", model="m", method="aosa", status="ok", params={},
                                 deletion_curve=[1.0, 0.5, 0.25])])
    old = pa.table({"run_id": ["r"], "video_id": ["old"], "model": ["m"], "method": ["aosa"], "status": ["ok"]})
    pq.write_table(old, tmp_path / "metrics" / "run_id=r" / "method=aosa" / "part-old.parquet")
    code, out, _ = run_query_cli(capsys, tmp_path, "SELECT video_id, deletion_curve, params FROM metrics "
                             "ORDER BY video_id", "--format", "json")
    assert code == 0 and json.loads(out) == [{"video_id": "old", "deletion_curve": None, "params": None},
                                             {"video_id": "v", "deletion_curve": [1.0, 0.5, 0.25], "params": "{}"}]


def test_several_selects_and_describe_are_allowed(store_dir, capsys):
    code, out, _ = run_query_cli(capsys, store_dir, "DESCRIBE metrics; SELECT 1 AS one", "--format", "csv")
    first, second = out.split("\n\n")
    assert code == 0 and "deletion_curve,FLOAT[]" in first and second.splitlines() == ["one", "1"]


FORBIDDEN = {
    "copy": "COPY (SELECT 1) TO '{outside}/x.csv'",
    "copy from view": "COPY metrics TO '{store}/metrics/x.parquet' (FORMAT parquet)",
    "attach": "ATTACH '{outside}/x.db'",
    "install": "INSTALL httpfs",
    "load": "LOAD httpfs",
    "create table": "CREATE TABLE t AS SELECT 1",
    "create view": "CREATE VIEW v AS SELECT 1",
    "create macro": "CREATE MACRO m(a) AS a",
    "insert": "INSERT INTO metrics (run_id) VALUES ('x')",
    "update": "UPDATE metrics SET status = 'ok'",
    "delete": "DELETE FROM metrics",
    "set": "SET enable_external_access = true",
    "pragma": "PRAGMA enable_profiling",
    "export": "EXPORT DATABASE '{outside}/dump'",
    "select then copy": "SELECT 1; COPY (SELECT 1) TO '{outside}/x.csv'",
    "read_csv": "SELECT * FROM read_csv('/etc/passwd')",
    "read_parquet outside": "SELECT * FROM read_parquet('{outside}/secret.parquet')",
    "read_parquet via ..": "SELECT * FROM read_parquet('{store}/../secret.parquet')",
    "replacement scan": "SELECT * FROM '{outside}/secret.parquet'",
    "glob outside": "SELECT * FROM glob('{outside}/*')",
    "syntax": "SELEC 1",
    "empty": " ; ",
}


@pytest.mark.parametrize("kind", FORBIDDEN)
def test_forbidden_statements_fail_with_one_line_and_write_nothing(kind, store_dir, tmp_path, capsys, monkeypatch):
    outside = tmp_path / "outside"
    outside.mkdir()
    pq.write_table(pa.table({"secret": [42]}), outside / "secret.parquet")
    monkeypatch.chdir(outside)
    before = sorted(tmp_path.rglob("*"))
    sql = FORBIDDEN[kind].format(outside=outside, store=store_dir)
    code, out, err = run_query_cli(capsys, store_dir, sql)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("aosa query: error: ")
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("statement", [
    "COPY (SELECT 1) TO '{outside}/x.csv'", "ATTACH '{outside}/x.db' AS x", "INSTALL httpfs", "LOAD httpfs",
    "SET enable_external_access = true", "RESET allowed_directories", "SELECT * FROM read_text('/etc/hostname')",
])
def test_sandbox_alone_refuses_writes_and_outside_reads(statement, store_dir, tmp_path):
    """Even a statement past the SELECT-only check cannot write, attach, install or read outside."""
    con = StoreReader(store_dir).connect(read_only=True)
    with pytest.raises(duckdb.Error):
        con.execute(statement.format(outside=tmp_path))
    assert con.execute("SELECT count(*) FROM metrics").fetchone() == (26,)
    assert not list(tmp_path.glob("x.*"))


def test_missing_store_is_one_line(tmp_path, capsys):
    code, _, err = run_query_cli(capsys, tmp_path / "nope", "SELECT 1")
    assert code == 2 and err.strip() == f"aosa query: error: store {tmp_path / 'nope'} is not a directory"


def report_lines(capsys, *argv: str) -> tuple[int, list[str]]:
    code = report(list(argv))
    return code, capsys.readouterr().out.splitlines()


def test_report_table_one_layout(store_dir, capsys):
    code, lines = report_lines(capsys, "--store", str(store_dir))
    assert code == 0
    assert lines[0] == "run latest: 2 videos with maps, 1 with errors; 12 maps ok, 1 failed"
    assert lines[2].startswith("Deletion / insertion, over-all")
    assert lines[4].split("  ")[0] == "method" and "deletion / insertion" in lines[4] and "S-PT" in lines[4]
    assert lines[5].split() == [*MODELS] * 4
    rows = {line.split()[0]: line for line in lines[7:]}
    assert list(rows) == list(METHODS)
    for k, method in enumerate(METHODS):
        cells = [cell_values(k, m) for m in range(len(MODELS))]
        expected = ([f"{c['deletion_auc']:.3f} / {c['insertion_auc']:.3f}" for c in cells]
                    + [f"{c['overall']:.3f}" for c in cells]
                    + (["-", "-"] if method.startswith("osa") else [f"{(2 * k + 1) / 8:.3f}"] * 2)
                    + [f"{c['seconds_total']:.3f}" for c in cells])
        assert [cell.strip() for cell in rows[method][len(method):].split("  ") if cell.strip()] == expected


@pytest.mark.parametrize(("table", "title", "methods"), [
    ("1", "Table I:", METHODS), ("4", "Table IV:", METHODS), ("5", "Table V:", METHODS),
    ("6", "Table VI:", [m for m in METHODS if m.split(":")[0] == "aosa"]),
    ("7", "Table VII:", [m for m in METHODS if m.split(":")[0] == "aosa-approx"]),
])
def test_report_presets_pick_the_papers_tables(store_dir, capsys, table, title, methods):
    code, lines = report_lines(capsys, "--store", str(store_dir), "--table", table)
    assert code == 0 and lines[2].startswith(title)
    assert [line.split()[0] for line in lines[7:]] == list(methods)


def test_report_run_choice_and_json(store_dir, capsys):
    code = report(["--store", str(store_dir), "--run-id", "older", "--format", "json"])
    captured = capsys.readouterr()
    cells = {(row["method"], row["model"]): row for row in json.loads(captured.out)}
    assert code == 0 and len(cells) == 6 and "run older:" in captured.err
    assert cells[("aosa", "r3d")]["deletion_auc"] == pytest.approx(cell_values(0, 1)["deletion_auc"] / 2)
    assert cells[("aosa-approx", "r2plus1d")]["spt"] == pytest.approx(3 / 8)
    assert cells[("osa:stride=4", "r3d")]["spt"] is None and cells[("aosa", "r3d")]["videos"] == 2
    assert report(["--store", str(store_dir), "--run-id", "nope"]) == 2
    assert capsys.readouterr().err.strip() == "aosa report: error: run 'nope' has no metrics rows in the store"
    assert aosa(["report", "--store", str(store_dir), "--format", "csv"]) == 0
    assert len(list(csv.DictReader(io.StringIO(capsys.readouterr().out)))) == 6


def test_report_on_empty_store_is_one_line(tmp_path, capsys):
    assert report(["--store", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == "aosa report: error: the store holds no metrics yet"


def test_a_runaway_query_is_stopped_at_its_timeout_in_one_line(store_dir, capsys):
    began = time.monotonic()
    code, out, err = run_query_cli(capsys, store_dir, "SELECT count(*) FROM range(1000000000000) a", "--timeout", "1")
    assert code == 2 and out == "" and err.count("\n") == 1 and "1 s timeout" in err
    assert time.monotonic() - began < 30


def test_a_query_past_the_row_cap_is_one_line_not_a_truncated_answer(store_dir, capsys):
    code, out, err = run_query_cli(capsys, store_dir, "SELECT * FROM range(10)", "--max-rows", "9")
    assert code == 2 and out == "" and "more than 9 rows" in err
    code, out, _ = run_query_cli(capsys, store_dir, "SELECT * FROM range(10)", "--max-rows", "10", "--format", "csv")
    assert code == 0 and len(out.strip().splitlines()) == 11


def test_memory_and_thread_caps_are_set_and_locked(store_dir, capsys):
    sql = "SELECT current_setting('threads') AS threads, current_setting('memory_limit') AS memory"
    code, out, _ = run_query_cli(capsys, store_dir, sql, "--threads", "1", "--memory-limit", "256MB",
                                 "--format", "json")
    settings = json.loads(out)[0]
    assert code == 0 and int(settings["threads"]) == 1 and settings["memory"].startswith(("244", "256"))
    with StoreReader(store_dir).connect(read_only=True) as con, pytest.raises(duckdb.Error, match="locked"):
        con.execute("SET threads=8")


def test_run_query_answers_each_statement_with_columns_and_rows(store_dir):
    """The sandbox the CLI uses, as a function (a web UI's SQL box reuses it)."""
    answers = run_query(StoreReader(store_dir), "SELECT 1 AS one; SELECT count(*) AS n FROM runs")
    assert answers == [(["one"], [(1,)]), (["n"], [(2,)])]
    with pytest.raises(QueryError, match="only SELECT statements are allowed"):
        run_query(StoreReader(store_dir), "SELECT 1; DELETE FROM metrics")


@pytest.mark.parametrize("sql", ["SELECT len(range(100000000))", "SELECT * FROM range(30000000)",
                                 "SELECT list(i) FROM range(100000000) t(i)"])
def test_a_query_past_its_memory_limit_is_one_line_and_its_processes_stay_small(store_dir, sql):
    """DuckDB's memory_limit does not cover lists or the answer's conversion to Python (this first query grew the
    process to 7.7 GB under a 100MB limit); the query's process is capped (idle it holds some 130 MiB; the CLI
    process, which imports torch, some 850 MiB), so the whole tree stays small."""
    command = [sys.executable, "-m", "aosa.jobs.query", "--store", str(store_dir), "--memory-limit", "200MB",
               "--max-rows", "100000000", sql]
    harness = subprocess.run([sys.executable, "-m", "tests.peak_rss", *command], cwd=ROOT, capture_output=True,
                             text=True, timeout=300)
    result = json.loads(harness.stdout.split("RESULT ", 1)[1])
    assert result["code"] == 2 and result["stderr"].count("\n") == 1
    assert result["stderr"].startswith("aosa query: error: the query needed more than --memory-limit 200MB")
    assert result["largest_peak_mib"] < 1536 and result["tree_mib"] < 1536, result
    assert result["descendants_peak_mib"] < 512, result  # the query's process: near its idle size + 200MB


def test_arrow_allocations_count_against_the_cap():
    """pyarrow's default pool (mimalloc) reserves 1 GiB up front, which a cap on the data segment cannot see; the
    query's process runs with the system pool, so an Arrow buffer past the cap fails."""
    code = ("import pyarrow as pa, pyarrow.dataset; from aosa.engine.store.query import cap_memory; "
            "cap_memory(200 * 10**6); pa.allocate_buffer(600 * 10**6)")
    result = subprocess.run([sys.executable, "-c", code], env=CHILD_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "MemoryError" in result.stderr


def test_the_row_cap_counts_bytes_too(store_dir, capsys):
    code, out, err = run_query_cli(capsys, store_dir, "SELECT range(1000000) AS r", "--max-bytes", "1MB")
    assert code == 2 and out == "" and err.count("\n") == 1 and "more than 1 MB" in err and "--max-bytes" in err
    code, out, _ = run_query_cli(capsys, store_dir, "SELECT range(1000) AS r", "--max-bytes", "1MB", "--format", "json")
    assert code == 0 and json.loads(out)[0]["r"] == list(range(1000))


@pytest.mark.parametrize(("option", "value"), [("--memory-limit", "lots"), ("--max-bytes", "2 parsecs"),
                                               ("--memory-limit", "0MB")])
def test_a_bad_size_is_one_line(store_dir, capsys, option, value):
    code, out, err = run_query_cli(capsys, store_dir, "SELECT 1", option, value)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("aosa query: error: ")


def stall(columns: list[str], rows: list[tuple]) -> str:
    """A rendering that never ends (the child imports this module to call it)."""
    time.sleep(3600)
    return ""


def test_the_timeout_kills_a_query_stuck_outside_duckdb(store_dir):
    """DuckDB's interrupt cannot stop converting or rendering an answer; the parent kills the child."""
    began = time.monotonic()
    with pytest.raises(QueryError, match="1 s timeout"):
        run_query(StoreReader(store_dir), "SELECT 1", QueryLimits(timeout=1), render=stall)
    assert time.monotonic() - began < 60


GLOB_PATHS = [("st[1]", "st1"), ("st?", "st1"), ("st*", "st1"), ("a\\b[1]", "a/b1")]
UNIT = ("video_id", "model", "method", "overall")


def own_rows(root: Path, columns: tuple[str, ...] = UNIT) -> list[str]:
    """The metrics rows of the files under `root` that readers see, read by path (no DuckDB), as JSON lines."""
    rows = []
    for path in visible_files(root, "metrics"):
        with path.open("rb") as file:
            rows += pq.read_table(file, columns=list(columns)).to_pylist()
    return sorted(json.dumps(row, default=datetime.isoformat) for row in rows)


def queried_rows(capsys, root: Path, columns: tuple[str, ...] = UNIT) -> list[str]:
    code, out, err = run_query_cli(capsys, root, f"SELECT {', '.join(columns)} FROM metrics", "--format", "json")
    assert code == 0, err
    return sorted(json.dumps(row) for row in json.loads(out))


def report_cells(capsys, root: Path) -> dict[tuple[str, str], float]:
    assert report(["--store", str(root), "--format", "json"]) == 0
    return {(row["method"], row["model"]): row["overall"] for row in json.loads(capsys.readouterr().out)}


def files_of(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in root.rglob("*.parquet")}


@pytest.mark.parametrize(("copy", "original"), GLOB_PATHS)
def test_a_store_at_a_glob_pattern_reads_only_itself(tmp_path, capsys, copy, original):
    """A backup copy of a store at a path DuckDB would expand (`st[1]` matches `st1`; `st?` and `st*` both; a
    backslash splits components there): its files keep the original's names but hold other numbers, and
    query, report and compact on either store see only its own files."""
    first, second = tmp_path / original, tmp_path / copy
    write_run(first, "latest", START)
    shutil.copytree(first, second)
    for path in visible_files(second, "metrics"):
        with path.open("rb") as file:
            table = pq.read_table(file)
        overall = table.schema.get_field_index("overall")
        table = table.set_column(overall, "overall", pc.add(table.column(overall), 1.0))
        with path.open("wb") as file:
            pq.write_table(table, file)
    originals = files_of(first)
    for root in (first, second):
        assert queried_rows(capsys, root) == own_rows(root)
    cells = report_cells(capsys, first)
    assert report_cells(capsys, second) == {key: pytest.approx(value + 1) for key, value in cells.items()}
    copied = own_rows(second)
    assert aosa(["compact", "--store", str(second)]) == 0
    capsys.readouterr()
    assert not list(second.rglob("part-*.parquet")) and own_rows(second) == copied
    assert queried_rows(capsys, second) == copied
    assert files_of(first) == originals and queried_rows(capsys, first) == own_rows(first)


def test_evaluate_on_a_store_at_a_glob_pattern_keeps_its_own_rows(ray_cluster, tmp_path, capsys):
    """`st[1]`, a backup of `st1` taken mid-run: resuming the run in each stores each one's own rows (the copy's
    resume reads which units it holds from its own files, not from the original's files of the same names)."""
    rows = [ManifestRow("v0", write_video(tmp_path / "v0.mp4", moving_square(18, 96, 128, step=2)), label=0),
            ManifestRow("gone", tmp_path / "gone.mp4", label=1)]
    manifest = tmp_path / "manifest.csv"
    write_manifest(rows, manifest)
    first, second = tmp_path / "st1", tmp_path / "st[1]"

    def run(root: Path, *extra: str) -> int:
        return evaluate(["--manifest", str(manifest), "--model", "probe3d", "--methods", "random", "--store",
                         str(root), "--run-id", "r", "--model-actors", "1", *extra])

    assert run(first, "--limit", "1") == 0
    shutil.copytree(first, second)
    assert run(first) == EXIT_UNITS_FAILED and run(second) == EXIT_UNITS_FAILED  # gone's error row, in each
    capsys.readouterr()
    columns = ("video_id", "method", "status", "created_at")
    for root in (first, second):
        assert queried_rows(capsys, root, columns) == own_rows(root, columns)
        assert sorted(json.loads(row)["video_id"] for row in own_rows(root, columns)) == ["gone", "v0"]
    assert own_rows(first, columns)[0] != own_rows(second, columns)[0]  # gone: stored by each store's own run
    assert own_rows(first, columns)[1] == own_rows(second, columns)[1]  # v0: the copied row
