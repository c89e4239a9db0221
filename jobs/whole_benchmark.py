"""`aosa benchmark --whole VIDEO`: what a whole-video map costs per window against one clip's map, both timed in
one process, alternating, so the machine's load falls on both alike.

The whole video is decoded once and its flow computed once; each clip map of the same windows decodes its 16 frames
and computes their flow itself, as `aosa explain --start S` does, with one explainer kept warm from clip to clip (as
the whole video's is from window to window, and as evaluate's model actors keep theirs). The same windows, because a
map's cost depends on its clip (AOSA's incremental passes grow where tubes move). The evidence curve (a few passes
per window) is reported beside the maps.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from aosa.engine.models.loading import LoadedModel
from aosa.engine.runtime.explain import ClipExplainer, explain_video
from aosa.engine.runtime.whole import explain_whole_video
from aosa.schemas.method_params import MethodParams


def whole_benchmark(video: Path, model: LoadedModel, method: str, params: MethodParams, repeats: int) -> dict[str, Any]:
    """Medians over `repeats` (after one warm-up round) of a whole-video map's seconds per window, without and with
    its evidence curve, and of the clip maps of the same windows, each decoded and its flow computed on its own."""
    warm = ClipExplainer(model, method, params)
    rounds = []
    for _ in range(repeats + 1):
        began = time.perf_counter()
        _, result = explain_whole_video(video, model, method, params)
        seconds = time.perf_counter() - began
        starts, evidence = [window.start for window in result.windows], result.timings["evidence"]
        began = time.perf_counter()
        for start in starts:
            explain_video(video, model, method, params, target=result.target, start=start, runner=warm)
        clips = time.perf_counter() - began
        rounds.append(((seconds - evidence) / len(starts), evidence / len(starts), clips / len(starts)))
    per_window, curve, clip = (statistics.median(values) for values in zip(*rounds[1:]))
    return {"video": str(video), "method": method, "windows": len(starts), "repeats": repeats,
            "per_window": per_window, "evidence_per_window": curve, "clip": clip,
            "ratio": per_window / clip, "ratio_with_evidence": (per_window + curve) / clip}


def format_whole(report: dict[str, Any]) -> str:
    """The benchmark line: seconds per window against one clip's map, and the ratios."""
    return (f"whole video ({report['windows']} windows, {report['method']}, median of {report['repeats']}): "
            f"{report['per_window']:.3f} s per window (one decode, one flow, stitched) against {report['clip']:.3f}"
            f" s per clip map of the same windows (each decoded, its flow computed): {report['ratio']:.3f}x; with "
            f"the evidence curve (+{report['evidence_per_window']:.3f} s per window) "
            f"{report['ratio_with_evidence']:.3f}x")
