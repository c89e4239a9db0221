"""`aosa explain --whole`: a video explained window by window equals the clip maps it is made of, a static video
stitches to its windows' map, the outputs are written, and bad input is one clear error line."""

import json
from pathlib import Path

import av
import numpy as np
import pytest

from aosa.engine.io.preprocess import load_clip
from aosa.engine.models.loading import load_model
from aosa.engine.runtime.explain import explain_clip
from aosa.engine.runtime.whole import explain_whole_video
from aosa.jobs.explain import main
from aosa.schemas.method_params import MethodParams
from tests.videos import moving_square, write_video

CHEAP_AOSA = MethodParams(stride=16)  # 49 masks: a clip's map in a fraction of a second


@pytest.fixture(scope="module")
def model():
    return load_model("probe:motion", "cpu")


@pytest.mark.parametrize(("method", "params"), [("aosa", MethodParams()), ("gradcam", MethodParams())])
def test_a_video_one_clip_long_gives_the_clip_map(tmp_path, model, method, params):
    path = write_video(tmp_path / "one.mp4", moving_square(16, 112, 112, step=3))
    clip = explain_clip(load_clip(path, model.preprocessing), model, method, params, target=1)
    _, whole = explain_whole_video(path, model, method, params, target=1)
    assert whole.saliency.shape == (16, 112, 112) and len(whole.windows) == 1
    np.testing.assert_array_equal(whole.saliency, clip.saliency)


@pytest.mark.parametrize("method", ["aosa", "aosa-approx", "gradcam"])
def test_windows_that_do_not_overlap_are_the_clip_maps_at_their_starts(tmp_path, model, method):
    """One decode and one flow for the video give each window the map its clip alone gets (anchors re-seeded in
    the window's first frame, the flow's slice equal to the clip's own flow)."""
    path = write_video(tmp_path / "two.mp4", moving_square(32, 112, 112, step=2))
    _, whole = explain_whole_video(path, model, method, CHEAP_AOSA, target=2, hop=16)
    for start in (0, 16):
        clip = explain_clip(load_clip(path, model.preprocessing, start=start), model, method, CHEAP_AOSA, target=2)
        np.testing.assert_array_equal(whole.saliency[start:start + 16], clip.saliency)


def test_a_static_video_stitches_to_its_windows_map(tmp_path, model):
    """Evidence that never moves: every window is the same clip, AOSA's tubes stand still, so each window's map is
    one frame's map repeated, and the stitched map is that map wherever windows overlap."""
    still = np.repeat(moving_square(1, 112, 112)[:1], 37, axis=0)
    path = write_video(tmp_path / "still.mp4", still)
    _, whole = explain_whole_video(path, model, "aosa", CHEAP_AOSA, target=0, hop=5)
    assert [w.start for w in whole.windows] == [0, 5, 10, 15, 20, 21]
    np.testing.assert_allclose(whole.saliency, np.broadcast_to(whole.first[0], whole.saliency.shape), rtol=1e-6,
                               atol=1e-9)
    np.testing.assert_allclose(whole.first, np.broadcast_to(whole.first[0], whole.first.shape), rtol=1e-6, atol=1e-9)


def test_explain_whole_writes_every_output(tmp_path, capsys):
    """Odd 99x75 source at 25 fps: the overlay is the whole video at its own rate, one edge row and column added
    for 4:2:0; the map is at model resolution; meta.json holds every window's timings."""
    video = write_video(tmp_path / "odd.mkv", moving_square(40, 75, 99, step=2), codec="ffv1")
    out = tmp_path / "out"
    assert main([str(video), "--model", "probe:motion", "--method", "gradcam", "--whole", "--out", str(out)]) == 0
    assert "4 windows" in capsys.readouterr().out
    assert np.load(out / "saliency.npy").shape == (40, 112, 112)
    timeline = json.loads((out / "timeline.json").read_text())
    assert [w["start"] for w in timeline["windows"]] == [0, 8, 16, 24] and timeline["hop"] == 8
    assert timeline["evidence"]["span"] == 4 and len(timeline["evidence"]["drops"]) == 10
    meta = json.loads((out / "meta.json").read_text())
    assert meta["saliency_shape"] == [40, 112, 112] and len(meta["whole"]["windows"]) == 4
    assert all("method" in window["timings"] for window in meta["whole"]["windows"])
    assert {"decode", "windows", "evidence", "overlay", "total"} <= set(meta["timings"])
    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        assert float(stream.average_rate) == 25
    assert len(frames) == 40 and frames[0].shape == (76, 100, 3)
    assert (out / "timeline.png").stat().st_size > 10_000


@pytest.mark.parametrize(("frames", "options", "problem"), [
    (10, [], "has 10 frames from the start frame, shorter than one clip of 16"),
    (24, ["--hop", "0"], "--hop: a hop of 0 frames must be between 1 and the model's clip length 16"),
    (24, ["--hop", "17"], "--hop: a hop of 17 frames must be between 1 and the model's clip length 16"),
    (24, ["--start", "10"], "has 14 frames from the start frame, shorter than one clip of 16"),
])
def test_bad_whole_video_input_is_one_error_line(tmp_path, capsys, frames, options, problem):
    video = write_video(tmp_path / "short.mp4", moving_square(frames, 64, 64))
    code = main([str(video), "--model", "probe:motion", "--method", "random", "--whole", "--out",
                 str(tmp_path / "out"), *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("aosa explain: error: ") and problem in err[0]
    if "frames from the start" in problem:
        assert str(video) in err[0]


@pytest.mark.parametrize(("options", "problem"), [
    (["--hop", "4"], "--hop applies to --whole only"),
    (["--whole", "--decoder", "dali"], "--decoder dali decodes clips only"),
])
def test_whole_video_options_that_do_not_fit(tmp_path, capsys, options, problem):
    video = write_video(tmp_path / "v.mp4", moving_square(20, 64, 64))
    assert main([str(video), "--model", "probe:motion", "--method", "random", "--out", str(tmp_path / "o"),
                 *options]) == 2
    assert problem in capsys.readouterr().err


def test_frame_directory_streams_as_a_whole_video(tmp_path, model):
    """A frame directory is a video for --whole too (read by Pillow, frame by frame)."""
    from aosa.engine.datasets.synthetic import write_frames

    write_frames(tmp_path / "frames", moving_square(20, 112, 112))
    video, whole = explain_whole_video(tmp_path / "frames", model, "random", MethodParams(), hop=4)
    assert video.decoder.startswith("jpeg-frames") and whole.saliency.shape == (20, 112, 112)
    assert [w.start for w in whole.windows] == [0, 4]
    assert Path(video.info.path).name == "frames"


def test_whole_benchmark_prints_the_per_window_ratio(tmp_path, capsys):
    from aosa.jobs.benchmark import main as benchmark

    video = write_video(tmp_path / "v.mp4", moving_square(24, 112, 112))
    report = tmp_path / "whole.json"
    assert benchmark(["--model", "probe:motion", "--methods", "gradcam", "--whole", str(video), "--repeats", "1",
                      "--json", str(report)]) == 0
    assert "whole video (2 windows, gradcam, median of 1)" in capsys.readouterr().out
    measured = json.loads(report.read_text())
    assert measured["ratio"] == pytest.approx(measured["per_window"] / measured["clip"])


def test_overlay_colours_only_the_part_of_the_source_the_model_saw():
    """A 100x200 source is resized to 112x224 and columns 56-167 cropped: only source columns 50-149 (the crop
    scaled back by 100/112) are coloured; the map's hot half lands on the crop's right."""
    from aosa.engine.io.preprocess import ClipGeometry
    from aosa.engine.reporting.overlay_video import source_overlay

    frame = np.full((100, 200, 3), 128, dtype=np.uint8)
    geometry = ClipGeometry.fit((100, 200), (112, 112))
    values = np.zeros((112, 112), np.float32)
    values[:, 56:] = 1.0
    out = source_overlay(frame, values, geometry, 0.0, 1.0).astype(int)
    changed = np.abs(out - 128).sum(axis=(0, 2)) > 0
    assert np.flatnonzero(changed).tolist() == list(range(50, 150))
    assert out[50, 130, 0] > out[50, 130, 2] and out[50, 70, 2] > out[50, 70, 0]  # red where hot, blue where cold
