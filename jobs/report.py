"""`aosa report --store DIR [--run-id ID] [--table 1|4|5|6|7|all|stages]`: the paper's tables for one run.

Rows are methods (method keys, so `aosa:top_k=0` is its own row), column groups are metrics, one column
per model inside each group; means over the run's `ok` metrics rows. S-PT is total hits / total frames
over the videos with boxes ('-' when none). The presets pick the paper's layouts: Table I deletion /
insertion and over-all, IV S-PT, V seconds per map, VI single vs integrated AOSA masks (over-all of the
`aosa` rows), VII AOSA-approx with and without conditional sampling and ReLU (the `aosa-approx` rows).
`stages` is the engine's throughput: per pipeline stage, items processed per second spent in it (decode, flow
and model_forward count busy time; explain, metrics and total are units' wall times, waits included).
`time` is the whole-video metrics of an `evaluate --clips all|every:HOP` run (shown under `all` too when the run
has them): the temporal pointing games of the evidence curve and of the stitched map with their chance level,
the temporal masses, and S-PT inside the segment and over the whole video; +- are 95% intervals over videos.
`--format csv|json` gives the numbers one row per method x model instead; the counts go to stderr.
A warning on stderr names videos the shown runs decoded with different decoders (issue 15).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import duckdb

from aosa.engine.errors import ConfigError
from aosa.engine.reporting.regression import SUMMARY_SQL
from aosa.engine.store.sql import run_select
from aosa.jobs.common import open_store, run_guarded
from aosa.jobs.query import add_store_options
from aosa.jobs.render import aligned, render

COUNTS_SQL = """
SELECT count(DISTINCT video_id) FILTER (WHERE status = 'ok'),
       count(DISTINCT video_id) FILTER (WHERE status <> 'ok'),
       count(*) FILTER (WHERE status = 'ok'), count(*) FILTER (WHERE status <> 'ok')
FROM metrics WHERE run_id = ?
"""

LATEST_RUN_SQL = """
SELECT run_id FROM (SELECT run_id, created_at FROM run_events UNION ALL SELECT run_id, created_at FROM metrics)
WHERE run_id IN (SELECT run_id FROM metrics)
GROUP BY run_id ORDER BY min(created_at) DESC, run_id DESC LIMIT 1
"""

STAGES_SQL = """
SELECT stage, any_value(unit) AS unit, sum(items) AS items, sum(seconds) AS seconds,
       sum(items) / sum(seconds) AS items_per_second
FROM timings WHERE run_id = ? GROUP BY stage ORDER BY stage
"""

TIME_MEASURES = {  # column -> its value per video; NULL or NaN where undefined (no positive mass, no boxed frame)
    "tpt_curve": "tpt_curve::int", "tpt_map": "tpt_map::int", "tmass_curve": "tmass_curve", "tmass_map": "tmass_map",
    "spt_segment": "spt_segment_hits::double / nullif(spt_segment_frames, 0)",
    "spt_video": "spt_video_hits::double / nullif(spt_video_frames, 0)"}


def _mean_and_interval(name: str, value: str) -> str:
    """SQL for the mean of a per-video value over the videos where it is defined, and its 95% interval's half-width
    (normal approximation): each video counts once, whatever its length."""
    defined = f"FILTER (WHERE NOT isnan({value}))"
    return (f"avg({value}) {defined} AS {name}, "
            f"1.96 * stddev_samp({value}) {defined} / sqrt(count({value}) {defined}) AS {name}_ci")


TIME_SQL = f"""
SELECT method, model, count(*) AS videos, avg(len(window_starts)) AS windows, avg(tpt_chance) AS chance,
       {", ".join(_mean_and_interval(name, value) for name, value in TIME_MEASURES.items())},
       avg(seconds_total) AS seconds_per_video
FROM metrics WHERE run_id = ? AND status = 'ok' AND clips IS NOT NULL GROUP BY method, model ORDER BY method, model
"""
TIME_COLUMNS = {  # header -> the TIME_SQL columns shown, joined by " +-"
    "videos": ("videos",), "windows": ("windows",), "T-PT curve": ("tpt_curve", "tpt_curve_ci"),
    "T-PT map": ("tpt_map", "tpt_map_ci"), "chance": ("chance",), "T-mass curve": ("tmass_curve", "tmass_curve_ci"),
    "T-mass map": ("tmass_map", "tmass_map_ci"), "S-PT segment": ("spt_segment", "spt_segment_ci"),
    "S-PT video": ("spt_video", "spt_video_ci"), "s / video": ("seconds_per_video",)}

DECODERS_SQL = """
SELECT video_id, array_agg(DISTINCT decoder ORDER BY decoder) AS decoders
FROM metrics WHERE list_contains(?, run_id) AND decoder IS NOT NULL
GROUP BY video_id HAVING count(DISTINCT decoder) > 1 ORDER BY video_id
"""

GROUPS = {  # column group -> the SUMMARY_SQL columns shown in its cells, joined by " / "
    "deletion / insertion": ("deletion_auc", "insertion_auc"),
    "over-all": ("overall",),
    "S-PT": ("spt",),
    "s / map": ("seconds_per_map",),
}


@dataclass(frozen=True)
class Preset:
    """A table of the paper: its title, column groups, and which method rows it shows (None: all)."""

    title: str
    groups: tuple[str, ...]
    method_name: str | None = None


PRESETS = {
    "all": Preset("Deletion / insertion, over-all, S-PT and seconds per map", tuple(GROUPS)),
    "1": Preset("Table I: deletion (lower is better) / insertion (higher), over-all (higher)",
                ("deletion / insertion", "over-all")),
    "4": Preset("Table IV: spatial pointing game (S-PT, higher is better)", ("S-PT",)),
    "5": Preset("Table V: mean seconds per map", ("s / map",)),
    "6": Preset("Table VI: AOSA with single (top_k=0) vs integrated masks, over-all", ("over-all",), "aosa"),
    "7": Preset("Table VII: AOSA-approx with / without conditional sampling and ReLU",
                ("deletion / insertion", "S-PT"), "aosa-approx"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa report", description="Table I (method x model) of one run.")
    parser.add_argument("--run-id", default=None, help="run to report (default: the latest started)")
    parser.add_argument("--table", choices=(*PRESETS, "stages", "time"), default="all",
                        help="which of the paper's tables, `stages`: each pipeline stage's throughput, or `time`: "
                             "the whole-video metrics of an evaluate --clips all|every:HOP run")
    add_store_options(parser)
    return parser


def choose_run(con: duckdb.DuckDBPyConnection, run_id: str | None) -> str:
    """`run_id` when it has metrics rows, else the run with metrics that started last."""
    if run_id is None:
        _, rows = run_select(con, LATEST_RUN_SQL)
        if not rows:
            raise ConfigError("the store holds no metrics yet")
        return rows[0][0]
    _, rows = run_select(con, "SELECT count(*) FROM metrics WHERE run_id = ?", [run_id])
    if rows[0][0] == 0:
        raise ConfigError(f"run {run_id!r} has no metrics rows in the store")
    return run_id


def mixed_decoders(con: duckdb.DuckDBPyConnection, run_ids: Sequence[str]) -> list[tuple[str, list[str]]]:
    """(video, decoders) for each video the runs decoded with more than one decoder; none for stores written
    before metrics had a decoder column."""
    columns, _ = run_select(con, "SELECT * FROM metrics LIMIT 0")
    if "decoder" not in columns:
        return []
    return [(video, list(decoders)) for video, decoders in run_select(con, DECODERS_SQL, [list(run_ids)])[1]]


def describe_mixed(mixed: list[tuple[str, list[str]]], runs: str) -> str:
    """One line naming how many videos `runs` decoded with different decoders, with the first as example."""
    video, decoders = mixed[0]
    return (f"{len(mixed)} video(s) were decoded with different decoders in {runs} (e.g. {video}: "
            f"{' vs '.join(decoders)}); their metrics may differ for that reason alone")


def layout(cells: list[dict[str, Any]], preset: Preset = PRESETS["all"]) -> str:
    """The paper's layout: a method per row, a column per model in each of the preset's groups."""
    cells = [cell for cell in cells if preset.method_name in (None, cell["method_name"])]
    if not cells:
        return "(no successful maps for this table)"
    models = list(dict.fromkeys(cell["model"] for cell in cells))
    by_key = {(cell["method"], cell["model"]): cell for cell in cells}
    header = [["method"] + [group if i == 0 else "" for group in preset.groups for i in range(len(models))],
              [""] + models * len(preset.groups)]
    body = [[method] + [_cell(group, by_key.get((method, model))) for group in preset.groups for model in models]
            for method in dict.fromkeys(cell["method"] for cell in cells)]
    return preset.title + "\n\n" + aligned(header, body)


def _cell(group: str, cell: dict[str, Any] | None) -> str:
    numbers = [None if cell is None else cell[key] for key in GROUPS[group]]
    return " / ".join(f"{number:.3f}" for number in numbers) if None not in numbers else "-"


def time_rows(con: duckdb.DuckDBPyConnection, run_id: str) -> tuple[list[str], list[tuple]]:
    """TIME_SQL's answer for the run; no rows for stores written before metrics had whole-video columns."""
    columns, _ = run_select(con, "SELECT * FROM metrics LIMIT 0")
    return run_select(con, TIME_SQL, [run_id]) if "clips" in columns else (list(TIME_COLUMNS), [])


def time_layout(columns: list[str], rows: list[tuple]) -> str:
    """The whole-video table: a method and model per row, a column per TIME_COLUMNS entry."""
    cells = [dict(zip(columns, row)) for row in rows]
    body = [[cell["method"], cell["model"]] + [" +-".join(_number(cell[key]) for key in keys)
                                               for keys in TIME_COLUMNS.values()] for cell in cells]
    return ("Whole videos: temporal pointing game (evidence curve and stitched map, chance = share of spans on the "
            "segment), temporal mass and S-PT (inside the segment, whole video); means over the videos where a measure "
            "is defined, each video once, +- a 95% interval\n\n"
            + aligned([["method", "model", *TIME_COLUMNS]], body))


def _number(value: float | int | None) -> str:
    return "-" if value is None else str(value) if isinstance(value, int) else f"{value:.3f}"


def run(args: argparse.Namespace) -> int:
    with open_store(args.store).connect(read_only=True) as con:
        run_id = choose_run(con, args.run_id)
        if args.table in ("stages", "time"):
            columns, rows = run_select(con, STAGES_SQL, [run_id]) if args.table == "stages" else time_rows(con, run_id)
            print(render(columns, rows, args.format) if args.format != "table" or args.table == "stages"
                  else time_layout(columns, rows))
            return 0
        columns, rows = run_select(con, SUMMARY_SQL, [[run_id]])
        (videos_ok, videos_failed, ok, failed), = run_select(con, COUNTS_SQL, [run_id])[1]
        mixed = mixed_decoders(con, [run_id])
        time_columns, times = time_rows(con, run_id) if args.table == "all" else ([], [])
    if mixed:
        print(f"warning: {describe_mixed(mixed, f'run {run_id}')}", file=sys.stderr)
    counts = (f"run {run_id}: {videos_ok} videos with maps, {videos_failed} with errors; "
              f"{ok} maps ok, {failed} failed")
    if args.format == "table":
        cells = [dict(zip(columns, row)) for row in rows]
        print(counts + "\n\n" + layout(cells, PRESETS[args.table])
              + ("\n\n" + time_layout(time_columns, times) if times else ""))
    else:
        print(render(columns, rows, args.format))
        print(counts, file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("report", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
