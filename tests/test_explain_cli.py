"""`aosa explain` end to end: outputs a person can look at, and one clear line for each bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aosa.engine.io.video import probe_video
from aosa.jobs.explain import main
from aosa.kernels.occlusion import CHECKED
from tests.videos import bigbuckbunny_path, moving_square, write_video

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "square.mp4", moving_square(20, 96, 128))


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aosa.jobs.explain", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_explain_writes_map_meta_and_pictures(clip_file, tmp_path):
    out = tmp_path / "out"
    assert main([str(clip_file), "--model", "probe3d", "--method", "aosa", "--stride", "16", "--out", str(out),
                 "--target", "1"]) == 0
    saliency = np.load(out / "saliency.npy")
    assert saliency.shape == (16, 112, 112) and saliency.dtype == np.float32
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "aosa" and meta["target"] == 1 and meta["target_name"] == "left"
    assert meta["params"]["stride"] == 16 and meta["params"]["fill"] == "mean"
    assert meta["n_forward"] == 49 + CHECKED + 1  # 7 x 7 anchors, the masks checked both ways, the clean clip
    assert meta["inference"] == "incremental" and meta["incremental_max_diff"] <= 1e-5
    assert {"decode", "flow", "method", "model_forward", "total"} <= set(meta["timings"])
    with Image.open(out / "overlay.gif") as gif:
        assert gif.n_frames == 16
    with Image.open(out / "frames.png") as png:
        assert np.asarray(png.convert("L")).std() > 0


def test_explain_real_h264_clip_with_approx(tmp_path):
    video = bigbuckbunny_path()
    assert probe_video(video).codec == "h264"
    out = tmp_path / "bbb"
    assert main([str(video), "--model", "probe3d", "--method", "aosa-approx", "--out", str(out)]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["params"]["fill"] == "conditional" and meta["n_forward"] == 1
    saliency = np.load(out / "saliency.npy")
    assert saliency.min() >= 0 and saliency.max() > 0  # ReLU keeps only score drops


def bad_inputs(tmp_path: Path, clip_file: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    short = write_video(tmp_path / "short.mp4", moving_square(8, 64, 64))
    broken_model = tmp_path / "broken.pt2"
    broken_model.write_bytes(b"\x00garbage" * 64)
    return {
        "missing file": ([str(tmp_path / "nope.mp4"), "--model", "probe3d"], "not found"),
        "not a video": ([str(text), "--model", "probe3d"], "notes.mp4"),
        "too few frames": ([str(short), "--model", "probe3d"], "8 frames"),
        "unknown method": ([str(clip_file), "--model", "probe3d", "--method", "gradcam9"], "unknown method 'gradcam9'"),
        "model does not load": ([str(clip_file), "--model", str(broken_model)], "broken.pt2"),
    }


def assert_one_error_line(returncode: int, stderr: str, expected: str) -> None:
    lines = stderr.strip().splitlines()
    assert returncode == 2, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1 and lines[0].startswith("aosa explain: error:"), stderr
    assert expected in lines[0], lines[0]


def test_bad_inputs_exit_nonzero_with_one_clear_line(tmp_path, clip_file, capsys):
    for case, (args, expected) in bad_inputs(tmp_path, clip_file).items():
        code = main([*args, "--out", str(tmp_path / "out")])
        assert_one_error_line(code, capsys.readouterr().err, expected)


def test_bad_input_from_the_shell_prints_no_traceback(tmp_path, clip_file):
    args, expected = bad_inputs(tmp_path, clip_file)["model does not load"]
    result = run_cli(*args, "--out", str(tmp_path / "out"))
    assert_one_error_line(result.returncode, result.stderr, expected)


def test_aosa_command_lists_jobs_and_dispatches(clip_file):
    listing = subprocess.run([sys.executable, "-m", "aosa.jobs.cli"], cwd=REPO, capture_output=True, text=True)
    assert listing.returncode == 0 and "explain" in listing.stdout
    unknown = subprocess.run([sys.executable, "-m", "aosa.jobs.cli", "frobnicate"], cwd=REPO, capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown job 'frobnicate'" in unknown.stderr


@pytest.mark.slow
@pytest.mark.parametrize("method, options", [("aosa", ["--top-k", "0"]), ("aosa", ["--top-k", "3"]), ("osa", [])])
def test_incremental_and_dense_maps_of_a_real_h264_clip_agree(method, options, tmp_path):
    """The paths part ways only in float rounding; a wrong window would show at the size of the map itself."""
    maps = {}
    for mode in ("on", "off"):
        out = tmp_path / mode
        assert main([str(bigbuckbunny_path()), "--model", "probe", "--method", method, *options,
                     "--incremental", mode, "--out", str(out)]) == 0
        meta = json.loads((out / "meta.json").read_text())
        assert meta["inference"] == {"on": "incremental", "off": "dense"}[mode]
        maps[mode] = np.load(out / "saliency.npy")
    assert meta["n_forward"] > 100  # every mask is counted whichever path scored it
    assert np.abs(maps["on"] - maps["off"]).max() <= 1e-3 * np.abs(maps["off"]).max()


@pytest.mark.slow  # builds full-size MViT
def test_incremental_on_with_a_model_it_cannot_trace_is_one_line(clip_file, tmp_path):
    result = run_cli(str(clip_file), "--model", "torchvision:mvit_v1_b", "--method", "osa", "--incremental", "on",
                     "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "aosa explain: error: --incremental on:" in result.stderr
