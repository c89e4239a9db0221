"""The model actor's whole-video work: a video's mean window logits, and a unit explained window by window
(engine.runtime.whole) with the first window's deletion and insertion, in one call on one actor."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from aosa.engine.models.counting import CountingModel
from aosa.engine.runtime.explain import ClipExplainer
from aosa.engine.runtime.whole import WholeExplanation, explain_windows
from aosa.engine.runtime.workers import ModelResult, ModelWorker, Stage
from aosa.kernels.metrics import Faithfulness, faithfulness
from aosa.kernels.scoring import ScoreFunction
from aosa.kernels.temporal import window_logits
from aosa.kernels.windows import window_starts
from aosa.schemas.method_params import MethodParams


@dataclass(frozen=True)
class WholeResult:
    """A video's windows explained, with the deletion and insertion of its first window's own map (the clip
    metrics) and the clips and seconds those curves cost."""

    explanation: WholeExplanation
    faith: Faithfulness
    metric_clips: int
    metric_seconds: float


class VideoModelWorker(ModelWorker):
    """A ModelWorker that also explains whole videos (a unit of `aosa evaluate --clips all|every:HOP`)."""

    def video_logits(self, video: torch.Tensor, hop: int) -> ModelResult:
        """Mean logits (classes,) over the windows of a (C, T, H, W) video, on the CPU: its video-level verdict."""
        clip = self.model.preprocessing.frames
        return self._run(lambda model: window_logits(model, video.to(self.model.device),
                                                     window_starts(video.shape[1], clip, hop), clip).mean(0))

    def explain_whole(self, method: str, params: MethodParams, video: torch.Tensor, target: int,
                      flow: torch.Tensor | None, hop: int, metric_batch_size: int) -> ModelResult:
        """Every window's map of `video` for `target`, stitched, with the evidence curve and the first window's
        deletion and insertion; one call, one actor (a unit's windows are not sharded)."""
        began = time.perf_counter()
        runner = ClipExplainer(self.model, method, params)
        inputs = video.to(self.model.device)
        explanation = explain_windows(runner, inputs, flow, target, self.model.preprocessing.frames, hop)
        scored = time.perf_counter()
        metrics = CountingModel(self.model)
        first = inputs[:, :explanation.clip]
        faith = faithfulness(ScoreFunction(metrics, target, "prob"), first, torch.from_numpy(explanation.first).to(
            inputs.device), batch_size=metric_batch_size)
        result = WholeResult(explanation, faith, metrics.clips, time.perf_counter() - scored)
        masks = [window.timings["masks"] for window in explanation.windows if "masks" in window.timings]
        self.reference.maybe_sample()
        inference = explanation.inference
        forwards = runner.counted.seconds + (inference.seconds if inference else 0.0)  # incremental clips' too
        return ModelResult(result, forwards, explanation.n_forward, time.perf_counter() - began, inference, Stage(sum(masks), runner.explainer.mask_count * len(masks), "masks")
                           if masks else None)
