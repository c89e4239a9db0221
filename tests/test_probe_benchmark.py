"""The probe benchmark end to end: on a fresh synthetic split, AOSA points at the moving target far more
often than a random map, and `aosa report` prints the numbers a DuckDB query over the store gives."""

import json

import pytest

from aosa.engine.datasets.synthetic import write_benchmark
from aosa.engine.store.reader import StoreReader
from aosa.jobs.evaluate import main as evaluate
from aosa.jobs.report import main as report


@pytest.fixture(scope="module")
def probe_store(ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("probe-benchmark")
    manifest = write_benchmark(root / "bench", videos=8, seed=4242, codec="libx264")  # a seed training never saw
    store = root / "store"
    code = evaluate(["--manifest", str(manifest), "--model", "probe", "--methods", "aosa,random", "--store",
                     str(store), "--run-id", "probe", "--model-actors", "2"])
    assert code == 0
    return store


def test_aosa_points_at_the_target_far_more_often_than_random(probe_store):
    with StoreReader(probe_store).connect(read_only=True) as con:
        rows = con.execute("SELECT method, sum(spt_hits) / sum(spt_frames), count(*) FROM metrics "
                           "WHERE status = 'ok' GROUP BY method").fetchall()
    spt = {method: rate for method, rate, _ in rows}
    assert {method: count for method, _, count in rows} == {"aosa": 8, "random": 8}
    assert spt["aosa"] >= spt["random"] + 0.4, spt


def test_report_numbers_equal_a_duckdb_query(probe_store, capsys):
    assert report(["--store", str(probe_store), "--run-id", "probe", "--format", "json"]) == 0
    cells = {cell["method"]: cell for cell in json.loads(capsys.readouterr().out)}
    with StoreReader(probe_store).connect(read_only=True) as con:
        for method, deletion, insertion, overall, hits, frames, seconds in con.execute(
                "SELECT method, avg(deletion_auc), avg(insertion_auc), avg(overall), sum(spt_hits), "
                "sum(spt_frames), avg(seconds_total) FROM metrics WHERE status = 'ok' GROUP BY method").fetchall():
            cell = cells[method]
            assert cell["deletion_auc"] == pytest.approx(deletion) and cell["insertion_auc"] == pytest.approx(insertion)
            assert cell["overall"] == pytest.approx(overall) and cell["spt"] == pytest.approx(hits / frames)
            assert cell["seconds_per_map"] == pytest.approx(seconds)
