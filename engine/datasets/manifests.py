"""Read and write manifests (CSV or Parquet, by suffix).

Every validation error names the manifest file, the 1-based data row and the column. A video file that
does not exist is not a manifest error: the evaluation stores it as a failed row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from aosa.engine.errors import ConfigError
from aosa.schemas.manifest import MANIFEST_COLUMNS, MANIFEST_SCHEMA, REQUIRED_COLUMNS, ManifestError, ManifestRow, check_text

SUFFIXES = (".csv", ".parquet")


def _format(path: Path) -> str:
    """'.csv' or '.parquet' from the file name; anything else is a ConfigError."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(f"{path}: a manifest must be a .csv or .parquet file")
    return suffix


def _columns_and_records(path: Path, chunk_rows: int) -> tuple[list[str], Iterator[dict[str, object]]]:
    """Column names and a lazy stream of the data rows as dicts, read `chunk_rows` at a time for Parquet."""
    if _format(path) == ".parquet":
        parquet = pq.ParquetFile(path)
        records = (record for batch in parquet.iter_batches(batch_size=chunk_rows) for record in batch.to_pylist())
        return parquet.schema_arrow.names, records
    handle = path.open(newline="", encoding="utf-8-sig")
    reader = csv.DictReader(handle)
    reader.fieldnames = [name.strip() for name in reader.fieldnames or []]

    def records_then_close() -> Iterator[dict[str, object]]:
        with handle:
            yield from reader
    return list(reader.fieldnames), records_then_close()


def read_manifest(path: Path) -> list[ManifestRow]:
    """Read and validate a whole manifest; relative video paths resolve against the manifest's folder."""
    return list(iter_manifest(path))


def iter_manifest(path: Path, chunk_rows: int = 1024) -> Iterator[ManifestRow]:
    """Stream a manifest's rows, validated as they come, so a run's memory does not grow with its length.

    The header is checked before the first row is yielded; a bad or repeated row raises when reached.
    """
    path = Path(path)
    with _read_errors(path):
        columns, records = _columns_and_records(path, chunk_rows)
    missing = [name for name in REQUIRED_COLUMNS if name not in columns]
    if missing:
        raise ConfigError(f"{path}: missing required column {', '.join(missing)} "
                          f"(columns are {', '.join(MANIFEST_COLUMNS)})")
    return _validated(path, records)


def _validated(path: Path, records: Iterator[dict[str, object]]) -> Iterator[ManifestRow]:
    first: dict[str, int] = {}
    with _read_errors(path):
        for number, record in enumerate(records, start=1):
            row = _row(path, number, record)
            _check_new(path, number, row.video_id, first)
            yield row


def count_rows(path: Path) -> int:
    """How many data rows a manifest has (Parquet metadata, or one streaming pass over a CSV), for progress."""
    path = Path(path)
    with _read_errors(path):
        if _format(path) == ".parquet":
            return pq.ParquetFile(path).metadata.num_rows
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return max(sum(1 for _ in csv.reader(handle)) - 1, 0)


def find_row(path: Path, video_id: str) -> ManifestRow | None:
    """The validated row of `video_id`, or None: the file is read column-wise and only that row is validated, so a
    100,000-row manifest answers in a fraction of a second (validating every row takes seconds)."""
    path = Path(path)
    with _read_errors(path):
        table = _text_table(path)
    if "video_id" not in table.column_names:
        raise ConfigError(f"{path}: missing required column video_id")
    found = pc.indices_nonzero(pc.equal(table.column("video_id"), video_id))
    if not len(found):
        return None
    number = found[0].as_py()
    return _row(path, number + 1, table.slice(number, 1).to_pylist()[0])


def _text_table(path: Path) -> pa.Table:
    """A whole manifest as Arrow; CSV cells stay text (as the csv module reads them), header names stripped."""
    if _format(path) == ".parquet":
        return pq.read_table(path)
    with path.open(newline="", encoding="utf-8-sig") as handle:
        names = [name.strip() for name in next(csv.reader(handle), [])]
    return pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
                          parse_options=pacsv.ParseOptions(newlines_in_values=True),
                          convert_options=pacsv.ConvertOptions(column_types=dict.fromkeys(names, pa.string()),
                                                               strings_can_be_null=False))


@contextmanager
def _read_errors(path: Path) -> Iterator[None]:
    """File-level read failures as one ConfigError naming the manifest."""
    try:
        yield
    except FileNotFoundError:
        raise ConfigError(f"{path}: manifest not found") from None
    except (OSError, pa.ArrowException, csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read manifest ({exc})") from None


def _row(path: Path, number: int, record: dict[str, object]) -> ManifestRow:
    """Data row `number` of manifest `path` as a ManifestRow; errors name the file, row and column."""
    try:
        return ManifestRow(video_id=record.get("video_id"), path=_resolve(path, record.get("path")),
                           label=record.get("label"), boxes=record.get("boxes"), segment=record.get("segment"))
    except ManifestError as exc:
        raise ConfigError(f"{path}: row {number}: {exc}") from None


def _resolve(manifest: Path, video: object) -> Path:
    """A path cell as an absolute path; relative ones are relative to the manifest's folder."""
    check_text("path", video)
    return (manifest.parent / str(video)).resolve()


def _check_new(path: Path, number: int, video_id: str, first: dict[str, int]) -> None:
    """Row `number`'s video_id must not have appeared before; a repeat names both rows."""
    if video_id in first:
        raise ConfigError(f"{path}: row {number}: column video_id: duplicate {video_id!r} "
                          f"(first at row {first[video_id]})")
    first[video_id] = number


def _check_unique(path: Path, rows: Sequence[ManifestRow]) -> None:
    """Every video_id appears once; a repeat names both rows."""
    first: dict[str, int] = {}
    for number, row in enumerate(rows, start=1):
        _check_new(path, number, row.video_id, first)


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
