"""Turn public action-dataset annotations into manifest rows: UCF101 split lists, UCF101-24 boxes
(`pyannot.pkl`, `UCF101v2-GT.pkl`), Kinetics CSVs and 3D-ResNets-PyTorch split JSONs over frame directories.

The .pkl files are pickles, which can run code when loaded; they are read with an unpickler that only
rebuilds plain containers and numpy arrays.
"""

from __future__ import annotations

import codecs
import json
import csv
import logging
import pickle
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from numpy._core.multiarray import _reconstruct, scalar
from numpy._core.numeric import _frombuffer

from aosa.engine.errors import ConfigError
from aosa.schemas.manifest import ManifestError, ManifestRow

log = logging.getLogger(__name__)

KINETICS_TEMPLATE = "{label}/{youtube_id}_{time_start:06d}_{time_end:06d}.mp4"

# Every global an annotation pickle may name: numpy array/scalar reconstruction (NumPy 1 and 2 module
# names) and the builtins behind plain containers and Python-2-era bytes. Anything else is refused.
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    **{(f"{package}.multiarray", "_reconstruct"): _reconstruct for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.multiarray", "scalar"): scalar for package in ("numpy.core", "numpy._core")},
    **{(f"{package}.numeric", "_frombuffer"): _frombuffer for package in ("numpy.core", "numpy._core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(module, kind.__name__): kind for module in ("builtins", "__builtin__")
       for kind in (set, frozenset, bytearray)},
    ("_codecs", "encode"): codecs.encode,
}


class _AnnotationUnpickler(pickle.Unpickler):
    """An unpickler that resolves only _ALLOWED_GLOBALS; any other global is a ConfigError naming the file."""

    def __init__(self, handle: Any, source: Path, encoding: str) -> None:
        super().__init__(handle, encoding=encoding)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise ConfigError(f"{self.source}: refused to load global {module}.{name}: an annotation pickle "
                              "may hold only containers, numbers, text and numpy arrays") from None


def load_annotation_pickle(path: Path, encoding: str = "latin1") -> Any:
    """Load an annotation pickle safely; `latin1` reads Python 2 pickles (str data, numpy arrays) too.
    Bytes (Python 2 str written at protocol 2 by Python 3) are decoded as latin1 text."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = _AnnotationUnpickler(handle, path, encoding).load()
    except FileNotFoundError:
        raise ConfigError(f"{path}: annotation file not found") from None
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError) as exc:
        raise ConfigError(f"{path}: not a readable annotation pickle ({type(exc).__name__}: {exc})") from None
    return _decode_bytes(data)


def _decode_bytes(data: Any) -> Any:
    """`data` with every bytes object inside dicts, lists and tuples decoded as latin1 text."""
    if isinstance(data, bytes):
        return data.decode("latin1")
    if isinstance(data, dict):
        return {_decode_bytes(key): _decode_bytes(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_decode_bytes(item) for item in data)
    return data


def _row(source: Path, where: str, video_id: str, path: Path, label: int | None,
         boxes: Sequence[tuple] | None = None) -> ManifestRow:
    """A ManifestRow; an invalid value is a ConfigError naming the annotation file and `where` in it."""
    try:
        return ManifestRow(video_id=video_id, path=path.resolve(), label=label, boxes=boxes)
    except ManifestError as exc:
        raise ConfigError(f"{source}: {where}: {exc}") from None


def _lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, whitespace-separated fields) of each non-blank line of a text file."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line.split()


def _ucf101_classes(class_index_file: Path) -> dict[str, int]:
    """classInd.txt ('1 ApplyEyeMakeup' per line) as {class name: 0-based index}."""
    classes = {}
    for number, fields in _lines(class_index_file):
        if len(fields) != 2 or not fields[0].isdigit() or int(fields[0]) < 1:
            raise ConfigError(f"{class_index_file}: line {number}: expected '<index from 1> <ClassName>'")
        classes[fields[1]] = int(fields[0]) - 1
    return classes


def ucf101_split(split_file: Path, class_index_file: Path, video_root: Path) -> list[ManifestRow]:
    """Rows of a UCF101 split list (trainlist0N.txt 'Class/v_Class_gNN_cNN.avi 1', labels 1-based, or
    testlist0N.txt without labels: the class folder is looked up in classInd.txt); labels stored 0-based."""
    classes = _ucf101_classes(class_index_file)
    rows = []
    for number, fields in _lines(split_file):
        where = f"line {number}"
        relative = PurePosixPath(fields[0])
        if len(fields) > 2:
            raise ConfigError(f"{split_file}: {where}: expected '<Class/video.avi> [label from 1]'")
        if len(fields) == 2:
            if not fields[1].isdigit() or not 1 <= int(fields[1]) <= len(classes):
                raise ConfigError(f"{split_file}: {where}: label {fields[1]!r} is not a class number "
                                  f"from 1 to {len(classes)} of {class_index_file}")
            label = int(fields[1]) - 1
        elif relative.parts[0] in classes:
            label = classes[relative.parts[0]]
        else:
            raise ConfigError(f"{split_file}: {where}: class folder {relative.parts[0]!r} is not in "
                              f"{class_index_file}")
        rows.append(_row(split_file, where, relative.stem, Path(video_root) / relative, label))
    return rows


def _check_window(start: int, frames: int) -> None:
    """The clip window [start, start + frames) must be a valid frame range."""
    if start < 0 or frames < 1:
        raise ConfigError(f"the clip window needs start >= 0 and frames >= 1, got start={start}, frames={frames}")


def _window(source: Path, boxes: Iterable[tuple[int, float, float, float, float]], start: int,
            frames: int) -> tuple[tuple[int, float, float, float, float], ...]:
    """Boxes (source frame, x0, y0, x1, y1) inside the clip window, with frames counted from `start`,
    sorted; empty boxes (x1 <= x0 or y1 <= y0, present in some public annotations) are dropped."""
    kept, empty = [], 0
    for frame, x0, y0, x1, y1 in boxes:
        if not start <= frame < start + frames:
            continue
        if x1 <= x0 or y1 <= y0:
            empty += 1
            continue
        kept.append((frame - start, x0, y0, x1, y1))
    if empty:
        log.warning("%s: dropped %d empty boxes", source, empty)
    return tuple(sorted(kept))


def _videos(data: Any, source: Path, key: str | None = None) -> dict[str, Any]:
    """The {video: annotation} dict of a loaded pickle (at `data[key]` when given)."""
    videos = data.get(key) if key is not None and isinstance(data, dict) else data
    if not isinstance(videos, dict):
        inside = f"[{key!r}] " if key is not None else ""
        raise ConfigError(f"{source}: expected {inside}a dict of videos, got {type(videos).__name__}")
    return videos


def _layout_error(source: Path, video: str, exc: Exception) -> ConfigError:
    """A ConfigError for a video entry that does not have the expected layout."""
    return ConfigError(f"{source}: video {video!r}: unexpected annotation layout ({type(exc).__name__}: {exc})")


def ucf101_24_pyannot(annotation_file: Path, video_root: Path, start: int = 0,
                      frames: int = 16) -> list[ManifestRow]:
    """Rows of UCF101-24 `pyannot.pkl` ({video: {'label', 'annotations': [{'sf', 'ef', 'boxes' (ef-sf, 4)
    as x,y,w,h}]}}, frames 0-based, ef exclusive), keeping boxes on frames [start, start+frames)."""
    _check_window(start, frames)
    rows = []
    for video, entry in _videos(load_annotation_pickle(annotation_file), annotation_file).items():
        try:
            boxes = [box for tube in entry["annotations"] for box in _xywh_tube(tube)]
            label = entry["label"]
        except (KeyError, TypeError, ValueError) as exc:
            raise _layout_error(annotation_file, video, exc) from None
        rows.append(_row(annotation_file, f"video {video!r}", PurePosixPath(video).name,
                         Path(video_root) / f"{video}.avi", label, _window(annotation_file, boxes, start, frames)))
    return rows


def _xywh_tube(tube: dict[str, Any]) -> list[tuple[int, float, float, float, float]]:
    """One pyannot tube as (source frame, x0, y0, x1, y1) boxes."""
    first, end = int(tube["sf"]), int(tube["ef"])
    xywh = np.asarray(tube["boxes"], dtype=np.float64)
    if xywh.shape != (end - first, 4):
        raise ValueError(f"tube from frame {first} to {end} has boxes of shape {xywh.shape}, "
                         f"expected ({end - first}, 4)")
    return [(frame, x, y, x + w, y + h) for frame, (x, y, w, h) in zip(range(first, end), xywh.tolist())]


def ucf101v2_gt(annotation_file: Path, video_root: Path, start: int = 0, frames: int = 16,
                classes: Sequence[str] | None = None) -> list[ManifestRow]:
    """Rows of `UCF101v2-GT.pkl` ({'gttubes': {video: {label: [(n, 5) arrays]}}, 'labels': [...]}),
    keeping boxes on frames [start, start+frames).

    Tube rows are [frame from 1, x1, y1, x2, y2] with x2, y2 the last pixel INSIDE the box (inclusive, as
    in VOC-style ground truth), so they become exclusive bounds x2 + 1, y2 + 1. With `classes`, labels are
    renumbered by name (via the file's 'labels') to index that list."""
    _check_window(start, frames)
    data = load_annotation_pickle(annotation_file)
    names = data.get("labels") if isinstance(data, dict) else None
    rows = []
    for video, tubes in _videos(data, annotation_file, "gttubes").items():
        try:
            label = _single_label(tubes)
            boxes = [(int(frame) - 1, x1, y1, x2 + 1, y2 + 1) for tube in tubes.get(label, [])
                     for frame, x1, y1, x2, y2 in np.asarray(tube, dtype=np.float64).reshape(-1, 5).tolist()]
        except (AttributeError, TypeError, ValueError) as exc:
            raise _layout_error(annotation_file, video, exc) from None
        label = None if label is None else _renumber(annotation_file, video, label, names, classes)
        rows.append(_row(annotation_file, f"video {video!r}", PurePosixPath(video).name,
                         Path(video_root) / f"{video}.avi", label, _window(annotation_file, boxes, start, frames)))
    return rows


def _single_label(tubes: dict[Any, Any]) -> Any:
    """The one class of a video's {label: tubes}; None when it has no tubes."""
    if len(tubes) > 1:
        raise ValueError(f"tubes of several classes {sorted(tubes)}")
    return next(iter(tubes), None)


def _renumber(source: Path, video: str, label: int, names: Sequence[str] | None,
              classes: Sequence[str] | None) -> int:
    """The label as an index into `classes` (by its name in `names`), or unchanged without `classes`."""
    if names is not None and not 0 <= label < len(names):
        raise ConfigError(f"{source}: video {video!r}: label {label} is outside the file's {len(names)} labels")
    if classes is None:
        return label
    if names is None:
        raise ConfigError(f"{source}: has no 'labels' list to match its labels to the given classes by name")
    return _class_index(source, f"video {video!r}", names[label], classes)


def _class_index(source: Path, where: str, name: str, classes: Sequence[str]) -> int:
    """Index of class `name` in `classes`; an unknown name is a ConfigError."""
    try:
        return list(classes).index(name)
    except ValueError:
        raise ConfigError(f"{source}: {where}: class {name!r} is not in the given class list") from None


def kinetics_csv(csv_file: Path, video_root: Path, classes: Sequence[str] | None = None,
                 path_template: str = KINETICS_TEMPLATE) -> list[ManifestRow]:
    """Rows of a Kinetics CSV (label,youtube_id,time_start,time_end,split); paths follow `path_template`
    (fields label, youtube_id, time_start, time_end, split) under `video_root`, labels index `classes`
    (default: the CSV's class names, sorted)."""
    records = _csv_records(csv_file, ("label", "youtube_id", "time_start", "time_end"))
    names = list(classes) if classes is not None else sorted({record["label"] for record in records})
    rows = []
    for number, record in enumerate(records, start=1):
        where = f"row {number}"
        fields = {**record, "time_start": _seconds(csv_file, where, record, "time_start"),
                  "time_end": _seconds(csv_file, where, record, "time_end")}
        try:
            relative = path_template.format(**fields)
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"bad path template {path_template!r}: {type(exc).__name__}: {exc}") from None
        rows.append(_row(csv_file, where, record["youtube_id"], Path(video_root) / relative,
                         _class_index(csv_file, where, record["label"], names)))
    return rows


def _csv_records(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """The data rows of a CSV file that has the `required` columns."""
    try:
        with Path(path).open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
            records = list(reader)
    except FileNotFoundError:
        raise ConfigError(f"{path}: annotation file not found") from None
    except (OSError, csv.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    missing = [name for name in required if name not in reader.fieldnames]
    if missing:
        raise ConfigError(f"{path}: missing required column {', '.join(missing)}")
    return records


def _seconds(source: Path, where: str, record: dict[str, str], column: str) -> int:
    """A whole-second time cell ('14' or '14.0')."""
    try:
        value = float(record[column] or "nan")
        if value.is_integer():
            return int(value)
    except ValueError:
        pass
    raise ConfigError(f"{source}: {where}: column {column}: must be whole seconds, got {record[column]!r}")


HARA_SUBSETS = ("training", "validation", "testing")


def hara_split(split_file: Path, frames_root: Path, subset: str | None = None,
               boxes: Sequence[ManifestRow] = ()) -> list[ManifestRow]:
    """Rows of a 3D-ResNets-PyTorch split JSON ({'labels': [...], 'database': {video: {'subset',
    'annotations': {'label', 'segment'}}}}, e.g. ucf101_01.json, kinetics.json) whose videos are frame
    directories FRAMES_ROOT/CLASS/VIDEO; labels index 'labels'; `boxes` rows (UCF101-24) join by video name."""
    labels, database = _hara_document(split_file)
    by_name = {row.video_id: row.boxes for row in boxes}
    rows = []
    for video, entry in database.items():
        where = f"video {video!r}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{split_file}: {where}: expected an object with 'subset' and 'annotations'")
        if subset is not None and entry.get("subset") != subset:
            continue
        annotations = entry.get("annotations")
        name = annotations.get("label") if isinstance(annotations, dict) else None
        label = None if name is None else _class_index(split_file, where, name, labels)
        folder = Path(frames_root) / name / video if name is not None else Path(frames_root) / video
        rows.append(_row(split_file, where, video, folder, label, by_name.get(video)))
    return rows


def _hara_document(split_file: Path) -> tuple[list[str], dict[str, Any]]:
    """The 'labels' list and 'database' dict of a split JSON; a missing or malformed part is a ConfigError."""
    try:
        data = json.loads(Path(split_file).read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{split_file}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{split_file}: not a readable JSON split file ({exc})") from None
    labels = data.get("labels") if isinstance(data, dict) else None
    database = data.get("database") if isinstance(data, dict) else None
    if not isinstance(labels, list) or not all(isinstance(name, str) for name in labels):
        raise ConfigError(f"{split_file}: expected a 'labels' list of class names")
    if not isinstance(database, dict):
        raise ConfigError(f"{split_file}: expected a 'database' object of videos")
    return labels, database
