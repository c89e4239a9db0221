"""Arrow schemas of every table in the result store (DESIGN.md sections 7 and 10), versioned.

Bump SCHEMA_VERSION when a column is added, renamed or retyped; readers union files by column name,
so files written under an older version stay readable (a column they lack reads as null).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 6  # 2: timings gained items and unit (a stage's throughput is items / seconds)
                    # 3: metrics gained decoder (the backend and version that decoded the clip)
                    # 4: metrics gained inference (incremental or dense exact occlusion)
                    # 5: metrics gained inference_note and incremental_max_diff (the incremental path's check)
                    # 6: metrics gained the whole-video columns, clips .. tmass_map (evaluate --clips)

TIMESTAMP = pa.timestamp("us", tz="UTC")
JSON = {"format": "json"}  # field metadata: a JSON document; dicts and lists are serialized on write


class TableError(ValueError):
    """Rows do not fit a table's schema (unknown column, missing value, wrong type)."""


def _required(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=False)


def _optional(name: str, type_: pa.DataType) -> pa.Field:
    return pa.field(name, type_, nullable=True)


def _schema(*fields: pa.Field) -> pa.Schema:
    return pa.schema(fields, metadata={"aosa_schema_version": str(SCHEMA_VERSION)})


UNIT_KEYS = (_required("run_id", pa.string()), _required("video_id", pa.string()),
             _required("model", pa.string()), _required("method", pa.string()))

RUNS = _schema(
    _required("run_id", pa.string()),
    _required("schema_version", pa.int32()),
    _required("created_at", TIMESTAMP),
    _required("config", pa.string()).with_metadata(JSON),   # the whole run config
    _required("versions", pa.string()).with_metadata(JSON),  # package -> version
    _optional("git_sha", pa.string()),
    _optional("host", pa.string()),
    _optional("device", pa.string()),
    # status: an evaluation's `running`, then `finished`, `failed` (some units failed) or `interrupted`; a
    # nightly's own rows `evaluated`, then its verdict `passed` or `failed` (jobs/nightly.py)
    _required("status", pa.string()),
)

METRICS = _schema(
    *UNIT_KEYS,                                               # method: the key with options, "aosa:top_k=0"
    _required("method_name", pa.string()),                    # "aosa"; defaults to the key before ':'
    _required("status", pa.string()),                         # "ok" | "error"
    _optional("error_kind", pa.string()),
    _optional("error", pa.string()),
    _optional("label", pa.int64()),
    _optional("target", pa.int64()),
    _optional("predicted", pa.int64()),
    _optional("score", pa.float64()),
    _optional("deletion_auc", pa.float64()),
    _optional("insertion_auc", pa.float64()),
    _optional("overall", pa.float64()),
    _optional("deletion_curve", pa.list_(pa.float32())),     # 29 scores (28 steps + start)
    _optional("insertion_curve", pa.list_(pa.float32())),
    _optional("spt_hits", pa.int64()),
    _optional("spt_frames", pa.int64()),
    _optional("seconds_total", pa.float64()),                # the map's compute: flow + busy seconds of its calls
    _optional("seconds_model", pa.float64()),
    _optional("n_forward", pa.int64()),
    _optional("map_path", pa.string()),                       # relative to the store root
    _optional("decoder", pa.string()),                        # "pyav 18.1.0 (FFmpeg 8.1.2)", "dali-cpu 2.4.0"
    _optional("inference", pa.string()),                      # AOSA / OSA: "incremental" or "dense"; else null
    _optional("inference_note", pa.string()),                 # why dense where incremental was tried or asked for
    _optional("incremental_max_diff", pa.float64()),          # largest |incremental - dense| score over the masks
                                                              # scored both ways; null where none was
    # A whole-video unit (evaluate --clips all|every:HOP; null for --clips first): target, predicted and score are
    # the video's (mean window logits); deletion .. spt_frames are its first window's own map's (the clip metrics);
    # map_path is the stitched (video_frames, H, W) map.
    _optional("clips", pa.string()),                          # "all" or "every:HOP"
    _optional("hop", pa.int64()),
    _optional("video_frames", pa.int64()),                    # frames from --start to the video's end
    _optional("window_starts", pa.list_(pa.int32())),         # each window's first frame
    _optional("window_scores", pa.list_(pa.float32())),       # each window's target probability on its own
    _optional("evidence_span", pa.int64()),                   # frames per span of the evidence curve (a quarter clip)
    _optional("evidence_curve", pa.list_(pa.float32())),      # drop of the video-level score per span occluded
    _optional("segment_start", pa.int64()),                   # the manifest's evidence segment [start, end)
    _optional("segment_end", pa.int64()),
    _optional("spt_video_hits", pa.int64()),                  # S-PT of the stitched map over every boxed frame
    _optional("spt_video_frames", pa.int64()),
    _optional("spt_segment_hits", pa.int64()),                # ... over the boxed frames inside the segment
    _optional("spt_segment_frames", pa.int64()),
    _optional("tpt_curve", pa.bool_()),                       # the evidence curve peaks on the segment
    _optional("tpt_map", pa.bool_()),                         # the stitched map's per-span mass peaks on it
    _optional("tpt_chance", pa.float64()),                    # share of spans on the segment: either's chance rate
    _optional("tmass_curve", pa.float64()),                   # share of the curve's positive mass in the segment
    _optional("tmass_map", pa.float64()),                     # share of the map's positive mass in the segment
    _required("params", pa.string()).with_metadata(JSON),
    _required("created_at", TIMESTAMP),
)

TIMINGS = _schema(
    *UNIT_KEYS,
    _required("stage", pa.string()),                          # decode, flow, masks, model, metrics, total, ...
    _required("seconds", pa.float64()),
    _optional("items", pa.int64()),                           # what the stage processed in those seconds ...
    _optional("unit", pa.string()),                           # ... counted in: frames, frame pairs, clips, maps
    _required("created_at", TIMESTAMP),
)

MAPS = _schema(
    *UNIT_KEYS,
    _required("path", pa.string()),                           # relative to the store root
    _required("shape", pa.list_(pa.int32())),
    _required("dtype", pa.string()),
    _required("created_at", TIMESTAMP),
)

TABLES: dict[str, pa.Schema] = {"runs": RUNS, "metrics": METRICS, "timings": TIMINGS, "maps": MAPS}

_DEFAULTS: dict[str, Callable[[Mapping[str, Any], datetime], Any]] = {
    "created_at": lambda row, now: now,
    "schema_version": lambda row, now: SCHEMA_VERSION,
    "method_name": lambda row, now: str(row["method"]).split(":", 1)[0] if row.get("method") else None,
}


def build_table(name: str, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A table of schema TABLES[name] from row dicts; absent nullable columns are null, `created_at` is now."""
    schema = schema_of(name)
    unknown = sorted({key for row in rows for key in row} - set(schema.names))
    if unknown:
        raise TableError(f"table {name}: unknown column {unknown[0]!r}")
    now = datetime.now(UTC)
    return pa.Table.from_arrays([_column(name, field, rows, now) for field in schema], schema=schema)


def schema_of(name: str) -> pa.Schema:
    """The schema of a stored table; a clear error for an unknown name."""
    if name not in TABLES:
        raise TableError(f"unknown table {name!r}; tables: {', '.join(TABLES)}")
    return TABLES[name]


def _column(table: str, field: pa.Field, rows: Sequence[Mapping[str, Any]], now: datetime) -> pa.Array:
    values = [_value(field, row, now) for row in rows]
    if not field.nullable and any(value is None for value in values):
        raise TableError(f"table {table}: column {field.name!r} needs a value in every row")
    try:
        return pa.array(values, type=field.type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as exc:
        raise TableError(f"table {table}: column {field.name!r} must be {field.type}: {exc}") from None


def _value(field: pa.Field, row: Mapping[str, Any], now: datetime) -> Any:
    value = row.get(field.name)
    if value is None:
        default = _DEFAULTS.get(field.name)
        return default(row, now) if default else None
    if field.metadata and field.metadata.get(b"format") == b"json" and not isinstance(value, str):
        return json.dumps(value, sort_keys=True)
    return value
