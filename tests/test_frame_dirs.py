"""Frame directories in the 3D-ResNets-PyTorch layout: decoding, faults, the hara manifest and explaining."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aosa.engine.datasets.manifests import read_manifest
from aosa.engine.datasets.synthetic import render_clip
from aosa.engine.errors import VideoError
from aosa.engine.io.preprocess import load_clip
from aosa.engine.io.video import decode_clip, probe_video
from aosa.engine.models.loading import load_model
from aosa.engine.runtime.explain import explain_video
from aosa.jobs.manifest import main as manifest_main
from aosa.schemas.method_params import MethodParams
from tests.videos import moving_square, square_left, write_video


def write_frames(folder: Path, frames: np.ndarray, quality: int = 95) -> Path:
    """Frames (T,H,W,3) as folder/image_00001.jpg, ... (numbered from 1, as 3D-ResNets-PyTorch does)."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames, start=1):
        Image.fromarray(frame).save(folder / f"image_{index:05d}.jpg", quality=quality)
    return folder


def test_probe_and_decode_in_order_the_same_with_every_backend(tmp_path: Path) -> None:
    folder = write_frames(tmp_path / "v", moving_square(12, 48, 80))
    info = probe_video(folder)
    assert (info.codec, info.width, info.height, info.frames, info.fps) == ("jpeg-frames", 80, 48, 12, None)
    pyav, dali = decode_clip(info, 2, 8, "pyav"), decode_clip(info, 2, 8, "dali")
    assert [square_left(frame) for frame in pyav.frames] == [2 * t for t in range(2, 10)]
    assert np.array_equal(pyav.frames, dali.frames) and pyav.decoder == dali.decoder
    assert pyav.decoder.startswith("jpeg-frames (Pillow ")


def _broken(tmp_path: Path, case: str) -> Path:
    folder = write_frames(tmp_path / case, moving_square(6, 48, 64))
    if case == "gap":
        (folder / "image_00003.jpg").unlink()
    elif case == "corrupt":
        (folder / "image_00002.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    elif case == "truncated":
        data = (folder / "image_00004.jpg").read_bytes()
        (folder / "image_00004.jpg").write_bytes(data[: len(data) // 2])
    elif case == "mixed":
        Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(folder / "image_00005.jpg")
    elif case == "empty":
        for child in folder.iterdir():
            child.unlink()
    return folder


@pytest.mark.parametrize(("case", "names"), [
    ("gap", ["image_00003.jpg is missing"]), ("corrupt", ["image_00002.jpg", "corrupt"]),
    ("truncated", ["image_00004.jpg", "corrupt"]), ("mixed", ["mixed sizes", "image_00005.jpg"]),
    ("empty", ["no image_NNNNN.jpg frames"])])
def test_bad_frame_directories_are_one_clear_error(tmp_path: Path, case: str, names: list[str]) -> None:
    folder = _broken(tmp_path, case)
    with pytest.raises(VideoError) as error:
        decode_clip(probe_video(folder), 0, 6 if case != "gap" else 2, "auto")
    assert str(folder) in str(error.value) and all(name in str(error.value) for name in names)


def _split(tmp_path: Path) -> tuple[Path, Path]:
    """A ucf101_01.json-style split over a frames root with two classes and three videos."""
    root = tmp_path / "frames"
    videos = {"v_Run_g01_c01": ("Run", "training"), "v_Jump_g01_c01": ("Jump", "validation"),
              "v_Run_g02_c01": ("Run", "validation")}
    for index, (video, (label, _)) in enumerate(videos.items()):
        write_frames(root / label / video, moving_square(4, 48, 64, step=index + 1))
    database = {video: {"subset": subset, "annotations": {"label": label, "segment": [1, 4]}}
                for video, (label, subset) in videos.items()}
    split = tmp_path / "ucf101_01.json"
    split.write_text(json.dumps({"labels": ["Jump", "Run"], "database": database}))
    return split, root


def test_hara_split_becomes_a_manifest_with_labels_in_order_and_boxes_joined(tmp_path: Path) -> None:
    split, root = _split(tmp_path)
    boxes = tmp_path / "pyannot.pkl"
    boxes.write_bytes(pickle.dumps({"Run/v_Run_g02_c01": {"label": 1, "annotations": [
        {"sf": 0, "ef": 2, "boxes": np.array([[1, 2, 10, 10], [2, 3, 10, 10]])}]}}))
    out = tmp_path / "val.csv"
    assert manifest_main(["--from", "hara", "--annotations", str(split), "--frames", str(root),
                          "--subset", "validation", "--boxes", str(boxes), "--out", str(out)]) == 0
    rows = {row.video_id: row for row in read_manifest(out)}
    assert set(rows) == {"v_Jump_g01_c01", "v_Run_g02_c01"}
    assert rows["v_Jump_g01_c01"].label == 0 and rows["v_Run_g02_c01"].label == 1
    assert rows["v_Run_g02_c01"].path == (root / "Run" / "v_Run_g02_c01").resolve()
    assert rows["v_Run_g02_c01"].boxes and rows["v_Jump_g01_c01"].boxes is None
    assert probe_video(rows["v_Jump_g01_c01"].path).frames == 4


def test_hara_split_errors_name_the_file_and_entry(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    split, root = _split(tmp_path)
    data = json.loads(split.read_text())
    data["database"]["v_Run_g01_c01"]["annotations"]["label"] = "Swim"
    split.write_text(json.dumps(data))
    assert manifest_main(["--from", "hara", "--annotations", str(split), "--frames", str(root),
                          "--out", str(tmp_path / "m.csv")]) != 0
    message = capsys.readouterr().err
    assert str(split) in message and "v_Run_g01_c01" in message and "Swim" in message


def test_frame_directory_explains_like_the_same_video_in_h264(tmp_path: Path) -> None:
    frames, _ = render_clip(np.random.default_rng(3), label=1)
    folder = write_frames(tmp_path / "clip", frames)
    encoded = write_video(tmp_path / "clip.mp4", frames)
    model = load_model("probe3d", "cpu")
    params = MethodParams(stride=16)
    maps = [explain_video(path, model, "aosa", params, target=1)[1].saliency for path in (folder, encoded)]
    # JPEG and H.264 lose different detail: measured r = 0.84; frames reversed gave 0.35, RGB read as BGR 0.63.
    assert np.corrcoef(maps[0].ravel(), maps[1].ravel())[0, 1] > 0.75
    clips = [load_clip(path, model.preprocessing).frames.astype(int) for path in (folder, encoded)]
    assert np.abs(clips[0] - clips[1]).mean() < 4
    assert np.abs(clips[0] - clips[1][::-1]).mean() > np.abs(clips[0] - clips[1]).mean() + 1
