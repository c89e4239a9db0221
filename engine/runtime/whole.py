"""A whole video explained window by window: decoded once, its flow computed once, one map per window of the
model's clip length for the video-level target, stitched into one (T_video, H, W) map (kernels.windows), with
each window's target probability and the temporal evidence curve (kernels.temporal).

AOSA builds its tubes per window, from anchors in the window's first frame tracked through the window's slice of
the video's flow, as it does for a clip: a window's map is then exactly the clip map of those frames, incremental
inference applies to each window unchanged, and every window keeps its full grid of anchors (tracks continued over
a long video leave the frame one by one, so later windows would be covered ever more thinly).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aosa.engine.errors import ConfigError, VideoError
from aosa.engine.io.flow import compute_flow, resolve_method
from aosa.engine.io.preprocess import Clip, load_video
from aosa.engine.models.loading import LoadedModel
from aosa.engine.runtime.explain import ClipExplainer
from aosa.kernels.fills import make_fill
from aosa.kernels.occlusion import Inference
from aosa.kernels.temporal import (EvidenceCurve, WindowedVideo, evidence_curve, span_length, video_scores,
                                   window_logits, window_probabilities)
from aosa.kernels.windows import stitch, window_starts
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams
from aosa.schemas.preprocessing import Preprocessing

Progress = Callable[[int, int], None]


def default_hop(clip: int) -> int:
    """Half a clip, at least one frame."""
    return max(1, clip // 2)


def check_hop(hop: int, clip: int, option: str = "--hop") -> None:
    """A hop between 1 and the clip length (ConfigError naming the `option` that asked for it otherwise)."""
    if not 1 <= hop <= clip:
        raise ConfigError(f"{option}: a hop of {hop} frames must be between 1 and the model's clip length {clip} "
                          "(a hop of 0 never moves; one longer than a clip skips frames)")


def clips_hop(clips: str, clip: int) -> int | None:
    """The hop of an evaluation's `--clips` (schemas.run_config.check_clips) for a model of `clip` frames: None
    for `first`, half a clip for `all`, HOP for `every:HOP` (ConfigError unless 1 <= HOP <= clip)."""
    mode, _, hop = clips.partition(":")
    if mode == "first":
        return None
    hop = default_hop(clip) if mode == "all" else int(hop)
    check_hop(hop, clip, f"--clips {clips}")
    return hop


def check_length(path: object, frames: int, clip: int) -> None:
    """A video of at least one clip (VideoError naming the file, kind too_few_frames, otherwise)."""
    if frames < clip:
        raise VideoError(path, f"has {frames} frames from the start frame, shorter than one clip of {clip}: a "
                         f"whole-video explanation needs at least {clip}", "too_few_frames")


@dataclass(frozen=True)
class Window:
    """One window: its first frame, the target's probability in it, its map's clips and timings."""

    start: int
    probability: float
    n_forward: int
    timings: dict[str, float]
    inference: Inference | None  # exact occlusion maps: incremental or dense, and how far checked


@dataclass
class WholeExplanation:
    """A stitched (T_video, H, W) map and how the video's windows made it; `score` is the video-level score and
    `first` the first window's own map (the clip map of the video's first frames)."""

    saliency: np.ndarray
    first: np.ndarray
    method: str
    params: MethodParams
    target: int
    predicted: int
    score: float
    clip: int
    hop: int
    windows: list[Window]
    evidence: EvidenceCurve
    n_forward: int
    flow: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def inference(self) -> Inference | None:
        """How the windows' exact occlusion maps were scored, as one map's shards are summed up; None for others."""
        parts = [window.inference for window in self.windows if window.inference is not None]
        return Inference.of_shards(parts) if parts else None

    def timeline(self) -> dict[str, Any]:
        """The windows, their probabilities and the evidence curve, as timeline.json holds them."""
        return {"frames": int(self.saliency.shape[0]), "clip": self.clip, "hop": self.hop, "target": self.target,
                "score": self.score, "score_kind": self.params.score,
                "windows": [{"start": w.start, "end": w.start + self.clip, "probability": w.probability}
                            for w in self.windows],
                "evidence": {"span": span_length(self.clip), "fill": self.params.fill,
                             "spans": [list(span) for span in self.evidence.spans],
                             "drops": self.evidence.drops.tolist()}}


def video_target(logits: torch.Tensor, target: int | None) -> tuple[int, int]:
    """(target, predicted) of (windows, classes) logits: the class of their mean unless a target is given."""
    classes = logits.shape[1]
    predicted = int(logits.double().mean(0).argmax())
    target = predicted if target is None else target
    if not 0 <= target < classes:
        raise ConfigError(f"target {target} is outside the model's classes 0..{classes - 1}")
    return target, predicted


def explain_windows(runner: ClipExplainer, video: torch.Tensor, flow: torch.Tensor | None, target: int | None,
                    clip: int, hop: int, progress: Progress | None = None) -> WholeExplanation:
    """Explain every `clip`-frame window of a (C, T, H, W) video (on the model's device), stepping `hop` frames,
    given the flow of all its frames (methods that need it)."""
    starts = window_starts(video.shape[1], clip, hop)
    logits = window_logits(runner.counted, video, starts, clip, runner.params.batch_size)
    target, predicted = video_target(logits, target)
    probabilities = window_probabilities(logits, target).tolist()
    maps, windows = [], []
    for index, start in enumerate(starts):
        window_flow = None if flow is None else flow[start:start + clip - 1]
        window = video[:, start:start + clip].contiguous()  # laid out as a decoded clip is
        saliency, timings, inference, n_forward = runner.run(window, target, window_flow)
        maps.append(torch.from_numpy(saliency))
        windows.append(Window(start, probabilities[index], n_forward, timings, inference))
        if progress:
            progress(index + 1, len(starts))
    stitched = stitch(maps, starts, video.shape[1])
    began = time.perf_counter()
    p = runner.params
    fill = make_fill(p.fill, video, runner.explainer.space, samples=1, radius=p.radius, seed=p.seed).expected
    evidence = evidence_curve(runner.counted, WindowedVideo(video, starts, clip, logits), target, fill, p.score,
                              p.batch_size)
    score = float(video_scores(logits, target, p.score))
    n_forward = len(starts) + sum(window.n_forward for window in windows) + evidence.clips
    return WholeExplanation(stitched.numpy(), maps[0].numpy(), runner.explainer.name, p, target, predicted, score,
                            clip, hop, windows, evidence, n_forward, timings={"evidence": time.perf_counter() - began})


def load_whole(row: ManifestRow, prep: Preprocessing, start: int) -> Clip:
    """Every frame of a manifest row's video from `start`, checked to hold a window and its segment."""
    video = load_video(row.path, prep, start)
    frames = video.tensor.shape[1]
    check_length(row.path, frames, prep.frames)
    if row.segment is not None and row.segment[1] > frames:
        raise VideoError(row.path, f"segment {list(row.segment)} lies outside the video's {frames} frames (from "
                         f"frame {start})", "bad_segment")
    return video


def explain_whole_video(path: Path | str, model: LoadedModel, method: str, params: MethodParams,
                        target: int | None = None, hop: int | None = None, start: int = 0,
                        progress: Progress | None = None) -> tuple[Clip, WholeExplanation]:
    """Decode every frame of `path` from `start` once, compute its flow once and explain all its windows."""
    clip_length = model.preprocessing.frames
    hop = default_hop(clip_length) if hop is None else hop
    check_hop(hop, clip_length)
    began = time.perf_counter()
    video = load_video(path, model.preprocessing, start)
    timings = {"decode": time.perf_counter() - began}
    check_length(path, video.tensor.shape[1], clip_length)
    runner = ClipExplainer(model, method, params)
    flow, flow_name = None, None
    if runner.method_class.needs_flow:
        flowed = time.perf_counter()
        flow_name = resolve_method(runner.params.flow)
        flow = compute_flow(video.frames, flow_name)
        timings["flow"] = time.perf_counter() - flowed
    result = explain_windows(runner, video.tensor.to(model.device), flow, target, clip_length, hop, progress)
    result.flow = flow_name
    result.timings = timings | {"windows": sum(w.timings["method"] for w in result.windows)} | result.timings | {
        "total": time.perf_counter() - began}
    return video, result
