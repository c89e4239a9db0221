"""Manifests (CSV/Parquet round trip, validation, box mapping), annotation readers, the safe unpickler
and `aosa manifest`."""

from __future__ import annotations

import csv
import io
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aosa.engine.datasets.annotations import (kinetics_csv, load_annotation_pickle, ucf101_24_pyannot, ucf101_split,
                                         ucf101v2_gt)
from aosa.engine.datasets.manifests import read_manifest, write_manifest
from aosa.engine.errors import ConfigError
from aosa.engine.io.preprocess import ClipGeometry, model_boxes
from aosa.jobs.cli import main as aosa
from aosa.schemas.manifest import MANIFEST_SCHEMA, ManifestRow


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    """A CSV file with `header` and `rows`, quoted as the csv module does."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _rows(root: Path) -> list[ManifestRow]:
    return [
        ManifestRow("a", root / "a.mp4", 3, ((0, 10.5, 20.0, 30.25, 40.0), (7, 1 / 3, 0.0, 2 / 3, 1e-3 + 5))),
        ManifestRow("b", root / "videos" / "b c.avi"),
        ManifestRow("c,\"quoted\"", root / "c.mp4", 0, ()),  # annotated, but no box inside the clip
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str) -> None:
    rows = _rows(tmp_path.resolve())
    out = tmp_path / f"manifest{suffix}"
    write_manifest(rows, out)
    assert read_manifest(out) == rows


def test_parquet_carries_the_versioned_schema(tmp_path: Path) -> None:
    write_manifest(_rows(tmp_path.resolve()), tmp_path / "m.parquet")
    schema = pq.read_schema(tmp_path / "m.parquet")
    assert schema.equals(MANIFEST_SCHEMA, check_metadata=False)
    assert schema.metadata[b"aosa.manifest.version"] == b"2"  # 2: the segment column


def test_relative_paths_resolve_against_the_manifest_folder(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "sub").mkdir()
    manifest = _write_csv(root / "sub" / "m.csv", ["video_id", "path", "label"],
                          [["a", "videos/a.mp4", ""], ["b", "../b.mp4", "2"], ["c", "/data/c.mp4", " 1 "]])
    rows = read_manifest(manifest)
    assert [row.path for row in rows] == [root / "sub" / "videos" / "a.mp4", root / "b.mp4", Path("/data/c.mp4")]
    assert [row.label for row in rows] == [None, 2, 1]
    assert all(row.boxes is None for row in rows)


def test_parquet_with_boxes_as_a_list_column(tmp_path: Path) -> None:
    table = pa.table({"video_id": ["a"], "path": ["a.mp4"], "label": [1.0], "boxes": [[[2, 1, 2, 3, 4]]]})
    pq.write_table(table, tmp_path / "m.parquet")
    (row,) = read_manifest(tmp_path / "m.parquet")
    assert row.label == 1 and row.boxes == ((2, 1.0, 2.0, 3.0, 4.0),)


@pytest.mark.parametrize(("rows", "expected"), [
    ([["", "a.mp4", "", ""]], "row 1: column video_id: is empty"),
    ([["a", "a.mp4", "", ""], ["a", "b.mp4", "", ""]], "row 2: column video_id: duplicate 'a' (first at row 1)"),
    ([["a", "", "", ""]], "row 1: column path: is empty"),
    ([["a", "a.mp4", "1", ""], ["b", "b.mp4", "cat", ""]], "row 2: column label: must be an integer"),
    ([["a", "a.mp4", "1.5", ""]], "row 1: column label: must be an integer"),
    ([["a", "a.mp4", "-1", ""]], "row 1: column label: must be at least 0"),
    ([["a", "a.mp4", "", "[[0, 1, 2"]], "row 1: column boxes: not valid JSON"),
    ([["a", "a.mp4", "", '{"frame": 0}']], "row 1: column boxes: must be a list"),
    ([["a", "a.mp4", "", "[[0, 1, 2, 3]]"]], "row 1: column boxes: box 1 must be a list of 5 numbers"),
    ([["a", "a.mp4", "", '[[0, 1, 2, 3, 4], [1, "x", 2, 3, 4]]']], "row 1: column boxes: box 2: coordinates"),
    ([["a", "a.mp4", "", "[[0.5, 1, 2, 3, 4]]"]], "row 1: column boxes: box 1: frame must be an integer"),
    ([["a", "a.mp4", "", "[[-1, 1, 2, 3, 4]]"]], "row 1: column boxes: box 1: frame must be at least 0"),
    ([["a", "a.mp4", "", "[[0, 5, 2, 5, 4]]"]], "row 1: column boxes: box 1: x1 (5) must be greater than x0 (5)"),
    ([["a", "a.mp4", "", "[[0, 1, 4, 3, 2]]"]], "row 1: column boxes: box 1: y1 (2) must be greater than y0 (4)"),
])
def test_validation_errors_name_file_row_and_column(tmp_path: Path, rows: list[list[str]], expected: str) -> None:
    manifest = _write_csv(tmp_path / "bad.csv", ["video_id", "path", "label", "boxes"], rows)
    with pytest.raises(ConfigError) as info:
        read_manifest(manifest)
    assert str(info.value).startswith(f"{manifest}: {expected}")


def test_missing_column_missing_file_and_wrong_suffix(tmp_path: Path) -> None:
    manifest = _write_csv(tmp_path / "m.csv", ["video_id", "label"], [["a", "1"]])
    with pytest.raises(ConfigError, match=r"m\.csv: missing required column path"):
        read_manifest(manifest)
    with pytest.raises(ConfigError, match="manifest not found"):
        read_manifest(tmp_path / "absent.parquet")
    with pytest.raises(ConfigError, match=r"must be a \.csv or \.parquet file"):
        read_manifest(tmp_path / "m.json")


def test_missing_video_file_is_not_a_manifest_error(tmp_path: Path) -> None:
    manifest = _write_csv(tmp_path / "m.csv", ["video_id", "path"], [["a", "nowhere/a.mp4"]])
    assert read_manifest(manifest)[0].path == tmp_path.resolve() / "nowhere" / "a.mp4"


def test_model_boxes_by_hand() -> None:
    # 320x240 -> 112x112: scale 112/240, resized 149 wide, crop left 18 (see test_preprocess).
    geometry = ClipGeometry.fit((240, 320), (112, 112))
    row = ManifestRow("a", Path("/v.mp4"), 0, (
        (0, 100, 60, 200, 180),   # x 46.67 -> 46 - 18 = 28, 93.33 -> 94 - 18 = 76; y 28 .. 84
        (3, 0, 0, 30, 240),       # inside the cropped-away left margin
        (16, 100, 60, 200, 180),  # frame outside a 16-frame clip
        (15, 250, -10, 400, 300),  # clipped to the crop
    ))
    assert model_boxes(row, geometry, 16) == [(0, 28, 28, 76, 84), (15, 98, 0, 112, 112)]
    assert model_boxes(ManifestRow("b", Path("/v.mp4")), geometry, 16) == []


def test_ucf101_split_lists(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    (root / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 Basketball\r\n")
    (root / "trainlist01.txt").write_bytes(b"ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
                                           b"Basketball/v_Basketball_g01_c01.avi 2\r\n\r\n")
    (root / "testlist01.txt").write_bytes(b"Basketball/v_Basketball_g02_c01.avi\r\n")
    train = ucf101_split(root / "trainlist01.txt", root / "classInd.txt", root / "videos")
    assert train == [
        ManifestRow("v_ApplyEyeMakeup_g08_c01", root / "videos/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
        ManifestRow("v_Basketball_g01_c01", root / "videos/Basketball/v_Basketball_g01_c01.avi", 1),
    ]
    (test,) = ucf101_split(root / "testlist01.txt", root / "classInd.txt", root / "videos")
    assert test.label == 1 and test.video_id == "v_Basketball_g02_c01"

    (root / "bad.txt").write_text("Biking/v_Biking_g01_c01.avi\n")
    with pytest.raises(ConfigError, match=r"bad\.txt: line 1: class folder 'Biking' is not in"):
        ucf101_split(root / "bad.txt", root / "classInd.txt", root)
    (root / "bad.txt").write_text("Basketball/v_Basketball_g01_c01.avi 3\n")
    with pytest.raises(ConfigError, match=r"bad\.txt: line 1: label '3' is not a class number from 1 to 2"):
        ucf101_split(root / "bad.txt", root / "classInd.txt", root)


def _pyannot() -> dict:
    boxes = np.array([[10, 20, 5, 6], [11, 21, 5, 6], [12, 22, 5, 6]], dtype=np.float32)
    return {
        "Basketball/v_Basketball_g01_c01": {"numf": 40, "label": 0, "annotations": [
            {"sf": 2, "ef": 5, "label": 0, "boxes": boxes},
            {"sf": 4, "ef": 6, "label": 0, "boxes": np.array([[0, 0, 1, 1], [1, 1, 0, 2]], dtype=np.int32)},
        ]},
        "Biking/v_Biking_g01_c01": {"numf": 30, "label": 1, "annotations": [
            {"sf": 20, "ef": 21, "label": 1, "boxes": np.array([[1.5, 2.5, 3.0, 4.0]])}]},
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_ucf101_24_pyannot_window(tmp_path: Path, protocol: int, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp_path.resolve()
    (root / "pyannot.pkl").write_bytes(pickle.dumps(_pyannot(), protocol=protocol))
    # Frames 3..5; the w=0 box on frame 5 is dropped (public annotations hold a few such boxes).
    basketball, biking = ucf101_24_pyannot(root / "pyannot.pkl", root, start=3, frames=3)
    assert basketball == ManifestRow("v_Basketball_g01_c01", root / "Basketball/v_Basketball_g01_c01.avi", 0,
                                     ((0, 11, 21, 16, 27), (1, 0, 0, 1, 1), (1, 12, 22, 17, 28)))
    assert "dropped 1 empty boxes" in caplog.text
    assert biking.label == 1 and biking.boxes == ()  # annotated, but not inside frames 3..5
    _, biking = ucf101_24_pyannot(root / "pyannot.pkl", root, start=20, frames=16)
    assert biking.boxes == ((0, 1.5, 2.5, 4.5, 6.5),)


def test_ucf101_24_pyannot_layout_error_names_the_video(tmp_path: Path) -> None:
    data = _pyannot()
    data["Biking/v_Biking_g01_c01"]["annotations"][0]["ef"] = 23
    (tmp_path / "pyannot.pkl").write_bytes(pickle.dumps(data))
    with pytest.raises(ConfigError, match=r"pyannot\.pkl: video 'Biking/v_Biking_g01_c01': .*shape \(1, 4\)"):
        ucf101_24_pyannot(tmp_path / "pyannot.pkl", tmp_path)


def _v2_gt() -> dict:
    tube = np.array([[1, 10, 20, 30, 40], [2, 11, 21, 31, 41], [20, 0, 0, 1, 1]], dtype=np.float32)
    return {"labels": ["Basketball", "Biking"], "nframes": {"Biking/v_Biking_g01_c01": 30},
            "resolution": {"Biking/v_Biking_g01_c01": (240, 320)},
            "gttubes": {"Biking/v_Biking_g01_c01": {1: [tube, np.array([[2, 50, 60, 70, 80]])]},
                        "Basketball/v_Basketball_g01_c01": {}}}


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes every str and bytes as a Python 2 `str` (BINSTRING), as Python 2's pickle did."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: str | bytes) -> None:
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        header = (pickle.SHORT_BINSTRING + bytes([len(data)]) if len(data) < 256
                  else pickle.BINSTRING + struct.pack("<i", len(data)))
        self.write(header + data)
        self.memoize(obj)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def _py2_pickle(data: object) -> bytes:
    """A protocol-2 pickle laid out as Python 2 with NumPy 1 wrote it."""
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(data)
    return buffer.getvalue().replace(b"numpy._core.", b"numpy.core.")


@pytest.mark.parametrize("writer", [pickle.dumps, _py2_pickle])
def test_ucf101v2_gt(tmp_path: Path, writer: Callable[[object], bytes]) -> None:
    root = tmp_path.resolve()
    (root / "UCF101v2-GT.pkl").write_bytes(writer(_v2_gt()))
    biking, basketball = ucf101v2_gt(root / "UCF101v2-GT.pkl", root / "v", start=0, frames=16)
    # Inclusive x2, y2 -> exclusive + 1; frame 1-based -> 0-based; frame 20 is outside the clip.
    assert biking == ManifestRow("v_Biking_g01_c01", root / "v/Biking/v_Biking_g01_c01.avi", 1,
                                 ((0, 10, 20, 31, 41), (1, 11, 21, 32, 42), (1, 50, 60, 71, 81)))
    assert basketball.label is None and basketball.boxes == ()
    renumbered, _ = ucf101v2_gt(root / "UCF101v2-GT.pkl", root, start=1, frames=1, classes=["Biking", "Basketball"])
    assert renumbered.label == 0 and renumbered.boxes == ((0, 11, 21, 32, 42), (0, 50, 60, 71, 81))


def test_python2_pickle_needs_latin1(tmp_path: Path) -> None:
    (tmp_path / "gt.pkl").write_bytes(_py2_pickle(_v2_gt()))
    with pytest.raises(UnicodeDecodeError):
        pickle.loads((tmp_path / "gt.pkl").read_bytes())
    data = load_annotation_pickle(tmp_path / "gt.pkl")
    assert data["labels"] == ["Basketball", "Biking"]
    np.testing.assert_array_equal(data["gttubes"]["Biking/v_Biking_g01_c01"][1][0], _v2_gt()["gttubes"][
        "Biking/v_Biking_g01_c01"][1][0])


def test_bytes_keys_are_decoded(tmp_path: Path) -> None:
    data = {b"gttubes": {b"Biking/v_Biking_g01_c01": {0: [np.array([[1, 0, 0, 4, 4]])]}}, b"labels": [b"Biking"]}
    (tmp_path / "gt.pkl").write_bytes(pickle.dumps(data, protocol=2))
    (row,) = ucf101v2_gt(tmp_path / "gt.pkl", tmp_path)
    assert row.video_id == "v_Biking_g01_c01" and row.boxes == ((0, 0, 0, 5, 5),)


class _Exploit:
    """Unpickling this runs a shell command: what a malicious annotation file would do."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return os.system, (self.command,)


@pytest.mark.parametrize("protocol", [2, 5])
def test_unpickler_refuses_code(tmp_path: Path, capfd: pytest.CaptureFixture[str], protocol: int) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pkl"
    evil.write_bytes(pickle.dumps({"gttubes": _Exploit(f"echo pwned; touch {marker}")}, protocol=protocol))
    with pytest.raises(ConfigError, match=rf"evil\.pkl: refused to load global {os.system.__module__}\.system"):
        ucf101v2_gt(evil, tmp_path)
    assert not marker.exists() and "pwned" not in capfd.readouterr().out


def test_unreadable_pickle(tmp_path: Path) -> None:
    (tmp_path / "junk.pkl").write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match=r"junk\.pkl: not a readable annotation pickle"):
        ucf101_24_pyannot(tmp_path / "junk.pkl", tmp_path)
    with pytest.raises(ConfigError, match=r"missing\.pkl: annotation file not found"):
        ucf101_24_pyannot(tmp_path / "missing.pkl", tmp_path)


def _kinetics(path: Path) -> Path:
    return _write_csv(path, ["label", "youtube_id", "time_start", "time_end", "split"],
                      [["air drumming", "def", "0", "10", "train"], ["abseiling", "abc", "14", "24.0", "train"]])


def test_kinetics_csv(tmp_path: Path) -> None:
    root = tmp_path.resolve()
    drumming, abseiling = kinetics_csv(_kinetics(root / "train.csv"), root / "k400")
    assert drumming == ManifestRow("def", root / "k400/air drumming/def_000000_000010.mp4", 1)
    assert abseiling == ManifestRow("abc", root / "k400/abseiling/abc_000014_000024.mp4", 0)
    drumming, _ = kinetics_csv(root / "train.csv", root, classes=["x", "air drumming", "abseiling"],
                               path_template="{split}/{youtube_id}.mp4")
    assert drumming.label == 1 and drumming.path == root / "train/def.mp4"
    with pytest.raises(ConfigError, match=r"train\.csv: row 1: class 'air drumming' is not in the given class list"):
        kinetics_csv(root / "train.csv", root, classes=["abseiling"])
    with pytest.raises(ConfigError, match=r"bad path template '\{clip\}\.mp4'"):
        kinetics_csv(root / "train.csv", root, path_template="{clip}.mp4")
    _write_csv(root / "bad.csv", ["label", "youtube_id", "time_start", "time_end"], [["a", "x", "1.5", "2"]])
    with pytest.raises(ConfigError, match=r"bad\.csv: row 1: column time_start: must be whole seconds"):
        kinetics_csv(root / "bad.csv", root)


def test_cli_writes_a_manifest_read_manifest_reads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path.resolve()
    (root / "pyannot.pkl").write_bytes(pickle.dumps(_pyannot()))
    out = root / "out" / "manifest.parquet"
    assert aosa(["manifest", "--from", "ucf101-24", "--annotations", str(root / "pyannot.pkl"),
                 "--video-root", str(root / "videos"), "--start", "3", "--frames", "2", "--out", str(out)]) == 0
    assert "wrote 2 rows (2 with boxes)" in capsys.readouterr().out
    assert read_manifest(out) == ucf101_24_pyannot(root / "pyannot.pkl", root / "videos", start=3, frames=2)

    csv_out = root / "k.csv"
    (root / "classes.txt").write_text("abseiling\nair drumming\n")
    assert aosa(["manifest", "--from", "kinetics", "--annotations", str(_kinetics(root / "train.csv")),
                 "--video-root", str(root), "--classes", str(root / "classes.txt"), "--out", str(csv_out)]) == 0
    assert [row.label for row in read_manifest(csv_out)] == [1, 0]


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert aosa(["manifest", "--from", "ucf101", "--annotations", "t.txt", "--video-root", ".",
                 "--out", str(tmp_path / "m.csv")]) == 2
    assert capsys.readouterr().err.strip() == "aosa manifest: error: --from ucf101 needs --class-index classInd.txt"
