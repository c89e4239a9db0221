"""`aosa focus`: each method's mass inside the target boxes, and where a global max pool's channels peak."""

import pytest
import torch
from torch import nn

from aosa.engine.datasets.manifests import write_manifest
from aosa.jobs.focus import kept_frame_sets, kept_target_scores, main, peaks_on_target
from aosa.kernels.scoring import ScoreFunction
from aosa.schemas.manifest import ManifestRow
from tests.videos import moving_square, write_video


def test_peaks_on_target_counts_the_channels_whose_peak_is_in_a_box():
    """Two channels copy two input channels; one peaks inside the frame-2 box, the other outside it."""
    conv = nn.Conv3d(3, 2, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0] = 1.0
        conv.weight[1, 1] = 1.0
    model = nn.Sequential(conv, nn.AdaptiveMaxPool3d(1), nn.Flatten(), nn.Linear(2, 3))
    clip = torch.zeros(3, 4, 16, 16)
    clip[0, 2, 5, 6] = 1.0   # channel 0's peak: frame 2, y 5, x 6, inside the box
    clip[1, 2, 12, 1] = 1.0  # channel 1's peak: same frame, outside it
    box = [(2, 4, 3, 9, 8)]  # (frame, x0, y0, x1, y1)
    assert peaks_on_target(model, clip, box) == pytest.approx(0.5)
    assert peaks_on_target(model, clip, [(1, 4, 3, 9, 8)]) == 0.0  # the box is on another frame
    average = nn.Sequential(conv, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(2, 3))
    assert torch.isnan(torch.tensor(peaks_on_target(average, clip, box)))


def test_focus_prints_each_methods_share_inside_the_boxes(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", moving_square(16, 112, 112))
    manifest = tmp_path / "manifest.csv"
    boxes = tuple((frame, 0.0, 0.0, 56.0, 112.0) for frame in range(16))  # the left half of every frame
    write_manifest([ManifestRow("clip", video, label=0, boxes=boxes), ManifestRow("unboxed", video, label=0)],
                   manifest)
    assert main(["--manifest", str(manifest), "--model", "probe3d", "--methods", "saliency,random"]) == 0
    out = capsys.readouterr().out
    assert "1 videos" in out
    fields = out.split("random")[1].split()
    share, spt = float(fields[fields.index("mass") + 1]), float(fields[fields.index("S-PT") + 1])
    assert 0.4 < share < 0.6  # a uniform random map puts half its mass in half the frame
    assert 0 < spt < 1 and (spt * 16) == pytest.approx(round(spt * 16), abs=1e-3)  # its peak hits some of 16 frames
    assert "peaking on the target: -" in out  # probe3d pools by average
    assert "the clip blurred as STEP blurs it" in out and "frames 4,12" in out


class BoxSum(nn.Module):
    """Logit 0 = the mean of channel 0 inside one box of given frames: only those pixels move the score."""

    def __init__(self, frames: list[int], box: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.frames, self.box = frames, box

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        x0, y0, x1, y1 = self.box
        inside = batch[:, 0, self.frames, y0:y1, x0:x1].mean(dim=(1, 2, 3))
        return torch.stack([inside, torch.zeros_like(inside)], dim=1)


def test_kept_target_scores_keep_the_clip_only_inside_the_boxes_of_the_chosen_frames():
    clip = torch.zeros(3, 8, 32, 32)
    clip[0, :, 8:16, 8:16] = 1.0  # a bright square in every frame, the only non-zero pixels
    boxes = [(frame, 8.0, 8.0, 16.0, 16.0) for frame in range(8)]
    score = ScoreFunction(BoxSum([4], (8, 8, 16, 16)), target=0, kind="logit")  # reads the square in frame 4
    kept = kept_frame_sets(8)
    assert list(kept) == ["none", "frame 4", "frames 2,6", "all"]
    scores = kept_target_scores(score, clip, boxes, kept)
    assert scores["clip"] == 1.0 and scores["frame 4"] == 1.0 and scores["all"] == 1.0  # frame 4's box is intact
    assert scores["frames 2,6"] == scores["none"] < 0.5  # frame 4 blurred: the square's edge leaks out
