"""Read and write manifests (CSV or Parquet, by suffix).

Every validation error names the manifest file, the 1-based data row and the column. A video file that
does not exist is not a manifest error: the evaluation stores it as a failed row.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from engine.errors import ConfigError
from schemas.manifest import MANIFEST_COLUMNS, MANIFEST_SCHEMA, REQUIRED_COLUMNS, ManifestError, ManifestRow, check_text

SUFFIXES = (".csv", ".parquet")


def _format(path: Path) -> str:
    """'.csv' or '.parquet' from the file name; anything else is a ConfigError."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: a manifest must be a .csv or .parquet file")
    return suffix


def _records(path: Path) -> tuple[list[str], list[dict[str, object]]]:
    """Column names and the data rows of a manifest file, as dicts."""
    if _format(path) == ".parquet":
        table = pq.read_table(path)
        return table.column_names, table.to_pylist()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        return list(reader.fieldnames), list(reader)


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and validate a manifest; relative video paths resolve against the manifest's folder."""
    path = Path(path)
    try:
        columns, records = _records(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: manifest not found") from None
    except (OSError, pa.ArrowException, csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read manifest ({exc})") from None
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise ConfigError(f"{path}: missing required column {', '.join(missing)} "
                          f"(columns are {', '.join(MANIFEST_COLUMNS)})")
    rows = [_row(path, number, record) for number, record in enumerate(records, start=1)]
    _check_unique(path, rows)
    return rows


def _row(path: Path, number: int, record: dict[str, object]) -> ManifestRow:
    """Data row `number` of manifest `path` as a ManifestRow; errors name the file, row and column."""
    try:
        return ManifestRow(video_id=record.get("video_id"), path=_resolve(path, record.get("path")),
                           label=record.get("label"), boxes=record.get("boxes"))
    except ManifestError as exc:
        raise ConfigError(f"{path}: row {number}: {exc}") from None


def _resolve(manifest: Path, video: object) -> Path:
    """A path cell as an absolute path; relative ones are relative to the manifest's folder."""
    check_text("path", video)
    return (manifest.parent / str(video)).resolve()


def _check_unique(path: Path, rows: Sequence[ManifestRow]) -> None:
    """Every video_id appears once; a repeat names both rows."""
    first: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        if row.video_id in first:
            raise ConfigError(f"{path}: row {number}: column video_id: duplicate {row.video_id!r} "
                              f"(first at row {first[row.video_id]})")
        first[row.video_id] = number


def write_manifest(rows: Sequence[ManifestRow], path: Path) -> None:
    """Write `rows` as CSV or Parquet (by suffix) with absolute paths; read_manifest returns them unchanged."""
    path = Path(path)
    suffix = _format(path)
    _check_unique(path, rows)
    records = [row.to_record() for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records, schema=MANIFEST_SCHEMA), path)
        return
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=MANIFEST_COLUMNS)
        writer.writeheader()
        writer.writerows(records)
