"""aosa report's whole-video table: each video counts once, an undefined measure (NaN, NULL) leaves the mean of the
videos where it is defined, and every measure has its 95% interval."""

from __future__ import annotations

import math
import statistics

import duckdb
import pytest

from aosa.jobs.report import time_layout, time_rows

VIDEOS = [  # tpt_curve, tpt_map, tmass_curve, tmass_map, spt_segment hits/frames, spt_video hits/frames
    (True, True, 0.5, 0.4, 8, 16, 10, 100),
    (False, True, math.nan, 0.2, 16, 16, 16, 20),  # an evidence curve without positive mass
    (True, False, 0.9, 0.6, 0, 20, 0, 0),  # no frame counted for S-PT video: undefined (rows made up for the SQL)
]


@pytest.fixture()
def con() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("""CREATE TABLE metrics (run_id VARCHAR, method VARCHAR, model VARCHAR, status VARCHAR, clips VARCHAR,
                   window_starts INT[], tpt_curve BOOLEAN, tpt_map BOOLEAN, tpt_chance DOUBLE, tmass_curve DOUBLE,
                   tmass_map DOUBLE, spt_segment_hits INT, spt_segment_frames INT, spt_video_hits INT,
                   spt_video_frames INT, seconds_total DOUBLE)""")
    for video in VIDEOS:
        con.execute("INSERT INTO metrics VALUES ('r', 'aosa', 'probe', 'ok', 'all', [0, 8], ?, ?, 0.25, ?, ?, ?, ?, "
                    "?, ?, 1.0)", list(video))
    return con


def interval(values: list[float]) -> tuple[float, float]:
    """Mean and 95% half-width (normal approximation, sample deviation) of `values`."""
    return statistics.fmean(values), 1.96 * statistics.stdev(values) / math.sqrt(len(values))


def test_time_table_skips_undefined_measures_and_weighs_videos_equally(con):
    columns, rows = time_rows(con, "r")
    row = dict(zip(columns, rows[0]))
    assert row["videos"] == 3 and row["windows"] == 2
    expected = {"tpt_curve": [1, 0, 1], "tpt_map": [1, 1, 0], "tmass_curve": [0.5, 0.9], "tmass_map": [0.4, 0.2, 0.6],
                "spt_segment": [0.5, 1.0, 0.0], "spt_video": [0.1, 0.8]}  # per video, not pooled over frames
    for name, values in expected.items():
        mean, half = interval(values)
        assert row[name] == pytest.approx(mean) and row[f"{name}_ci"] == pytest.approx(half), name
    table = time_layout(columns, rows)
    assert "nan" not in table and f"{interval([0.5, 0.9])[0]:.3f} +-{interval([0.5, 0.9])[1]:.3f}" in table
