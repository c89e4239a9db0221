"""The manifest contract (DESIGN.md section 10): one row per video to evaluate, with optional label, boxes and the
segment of frames that holds the class's evidence (a long video's ground truth for time).

Pure data and validation; reading and writing files lives in engine/manifests.py.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

MANIFEST_VERSION = 2  # 2: segment
MANIFEST_COLUMNS = ("video_id", "path", "label", "boxes", "segment")
REQUIRED_COLUMNS = ("video_id", "path")
MANIFEST_SCHEMA = pa.schema(
    [pa.field("video_id", pa.string(), nullable=False), pa.field("path", pa.string(), nullable=False),
     pa.field("label", pa.int64()), pa.field("boxes", pa.string()), pa.field("segment", pa.string())],
    metadata={"aosa.manifest.version": str(MANIFEST_VERSION)},
)

Box = tuple[int, float, float, float, float]  # (frame, x0, y0, x1, y1): source pixels, x1/y1 exclusive
Segment = tuple[int, int]  # [first, end) frames, counted like boxes' frames (from the run's --start)


class ManifestError(ValueError):
    """One manifest value is invalid; `column` names where, the message says what is wrong."""

    def __init__(self, column: str, problem: str) -> None:
        super().__init__(f"column {column}: {problem}")
        self.column = column


@dataclass(frozen=True)
class ManifestRow:
    """One video: id, absolute path, 0-based class label (None: unknown), boxes (None: not annotated) and the
    segment [first, end) of frames holding the evidence (None: not annotated).

    Construction normalizes numeric types (numpy scalars, integral floats) and rejects invalid values.
    """

    video_id: str
    path: Path
    label: int | None = None
    boxes: tuple[Box, ...] | None = None
    segment: Segment | None = None

    def __post_init__(self) -> None:
        check_text("video_id", self.video_id)
        if not Path(self.path).is_absolute():
            raise ManifestError("path", f"must be absolute, got {str(self.path)!r}")
        object.__setattr__(self, "path", Path(self.path))
        object.__setattr__(self, "label", parse_label(self.label))
        object.__setattr__(self, "boxes", normalize_boxes(self.boxes))
        object.__setattr__(self, "segment", parse_segment(self.segment))

    def to_record(self) -> dict[str, object]:
        """The row as MANIFEST_SCHEMA values (boxes as JSON text)."""
        boxes = None if self.boxes is None else json.dumps([list(box) for box in self.boxes])
        segment = None if self.segment is None else json.dumps(list(self.segment))
        return {"video_id": self.video_id, "path": str(self.path), "label": self.label, "boxes": boxes,
                "segment": segment}


def check_text(column: str, value: object) -> None:
    """A required text cell: present, text and not blank."""
    if _is_missing(value):
        raise ManifestError(column, "is empty")
    if not isinstance(value, str):
        raise ManifestError(column, f"must be text, got {value!r}")


def _integer(value: object) -> int | None:
    """`value` as an int if it is an integral number or integer text, else None (bools are not integers)."""
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value).is_integer():
        return None
    return int(value)


def _is_missing(value: object) -> bool:
    """An empty manifest cell: None, blank text or a NaN (how pandas writes a missing number)."""
    return value is None or (isinstance(value, str) and not value.strip()) or (
        isinstance(value, float) and math.isnan(value))


def parse_label(value: object) -> int | None:
    """A label cell as a class index >= 0, or None when empty."""
    if _is_missing(value):
        return None
    label = _integer(value)
    if label is None:
        raise ManifestError("label", f"must be an integer class index, got {value!r}")
    if label < 0:
        raise ManifestError("label", f"must be at least 0, got {label}")
    return label


def _json_cell(column: str, value: object) -> object:
    """A cell as written: JSON text parsed, anything else as it is; bad JSON is a ManifestError naming `column`."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ManifestError(column, f"not valid JSON ({exc.msg} at character {exc.pos})") from None


def parse_segment(value: object) -> Segment | None:
    """A segment cell (JSON text or a sequence [first, end]) as integer frames with 0 <= first < end; None when
    empty. Whether it lies inside the video is known only once the video is decoded."""
    if _is_missing(value):
        return None
    value = _json_cell("segment", value)
    frames = [None if isinstance(v, str) else _integer(v) for v in value] if isinstance(value, Sequence) else []
    if isinstance(value, (str, bytes)) or len(frames) != 2 or None in frames:
        raise ManifestError("segment", f"must be [first, end], two integer frames, got {value!r}")
    first, end = frames
    if not 0 <= first < end:
        raise ManifestError("segment", f"needs 0 <= first < end (end exclusive), got [{first}, {end}]")
    return first, end


def normalize_boxes(value: object) -> tuple[Box, ...] | None:
    """A boxes cell (JSON text or a sequence of [frame, x0, y0, x1, y1]) as checked tuples; None when empty."""
    if _is_missing(value):
        return None
    value = _json_cell("boxes", value)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise ManifestError("boxes", f"must be a list of [frame, x0, y0, x1, y1], got {value!r}")
    return tuple(_box(number, box) for number, box in enumerate(value, start=1))


def _box(number: int, box: object) -> Box:
    """Box `number` (1-based, for messages) as (frame, x0, y0, x1, y1) with a frame >= 0 and x0 < x1, y0 < y1."""
    where = f"box {number}"
    if isinstance(box, (str, bytes)) or not isinstance(box, Sequence) or len(box) != 5:
        raise ManifestError("boxes", f"{where} must be a list of 5 numbers [frame, x0, y0, x1, y1], got {box!r}")
    frame = _integer(box[0]) if not isinstance(box[0], str) else None
    if frame is None:
        raise ManifestError("boxes", f"{where}: frame must be an integer, got {box[0]!r}")
    if frame < 0:
        raise ManifestError("boxes", f"{where}: frame must be at least 0, got {frame}")
    coords = [_coordinate(where, value) for value in box[1:]]
    x0, y0, x1, y1 = coords
    if x1 <= x0:
        raise ManifestError("boxes", f"{where}: x1 ({x1:g}) must be greater than x0 ({x0:g})")
    if y1 <= y0:
        raise ManifestError("boxes", f"{where}: y1 ({y1:g}) must be greater than y0 ({y0:g})")
    return frame, x0, y0, x1, y1


def _coordinate(where: str, value: object) -> float:
    """A finite box coordinate as a float."""
    if isinstance(value, (bool, str, bytes)):
        raise ManifestError("boxes", f"{where}: coordinates must be numbers, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ManifestError("boxes", f"{where}: coordinates must be numbers, got {value!r}") from None
    if not math.isfinite(number):
        raise ManifestError("boxes", f"{where}: coordinates must be finite, got {value!r}")
    return number
