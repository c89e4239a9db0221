"""`aosa benchmark --graph-clips N`: incremental AOSA maps of N different clips through one worker's static plans
(kernels/incremental/graphs.py: CUDA graphs on a GPU) against the same maps run op by op, alternating in one process.

A static plan serves every clip whose plan fits its capacities, so what it gains on a dataset depends on how often a
clip's plan needs a new capture and how much padding the capacities add; one clip timed again and again would hide
both. The clips are the benchmark's synthetic videos with seeds 0..N-1 (the square crosses on other textures).
On a CPU the static plans run eagerly from their buffers (what a replay computes): the counts hold, the seconds say
what padding and loading cost without a graph's gain.
"""

from __future__ import annotations

import dataclasses
import statistics
from typing import Any

from aosa.engine.io.flow import compute_flow, resolve_method
from aosa.engine.models.loading import LoadedModel
from aosa.engine.models.timing import timed
from aosa.engine.runtime.explain import choose_target
from aosa.jobs.benchmark_clips import normalized_clip, synthetic_video
from aosa.kernels.incremental import PlanGraphs
from aosa.kernels.methods import get_method
from aosa.kernels.space import InputSpace
from aosa.schemas.method_params import MethodParams


def graph_benchmark(model: LoadedModel, params: MethodParams, clips: int) -> dict[str, Any]:
    """Seconds per map of both paths over `clips` clips (the first map of each path apart: it captures or warms up),
    static plans made, plans run, tile positions held at capacity over those computed, largest map difference."""
    prep = model.preprocessing
    space = InputSpace(mean=prep.mean, std=prep.std)
    chosen = dataclasses.replace(params, incremental="on")
    static, eager = (get_method("aosa")(model, chosen, space) for _ in range(2))
    graphs = static.graphs = PlanGraphs(capture=None if model.device.type == "cuda" else False)
    eager.graphs = None
    seconds: dict[str, list[float]] = {"static": [], "eager": []}
    difference, dense = 0.0, 0
    for seed in range(clips):
        video = synthetic_video(prep.frames, prep.height, prep.width, seed=seed)
        clip, flow = normalized_clip(video, model), compute_flow(video, resolve_method(params.flow))
        target = choose_target(model, clip, None, params.score)[0]
        maps = {}
        for name, method in (("eager", eager), ("static", static)):
            elapsed, maps[name] = timed(lambda method=method: method.attribute(clip, target, flow), model.device)
            seconds[name].append(elapsed)
            dense += method.inference.path != "incremental"
        difference = max(difference, float((maps["static"] - maps["eager"]).abs().max()))
    later = lambda values: statistics.median(values[1:]) if len(values) > 1 else values[0]  # noqa: E731
    return {"clips": clips, "captures": graphs.captures, "runs": graphs.runs, "graphs": model.device.type == "cuda",
            "padding": graphs.held / max(graphs.computed, 1), "first_static": seconds["static"][0],
            "first_eager": seconds["eager"][0], "static": later(seconds["static"]), "eager": later(seconds["eager"]),
            "max_map_difference": difference, "dense_maps": dense}


def format_graphs(report: dict[str, Any]) -> str:
    """The benchmark's lines: reuse, padding, seconds of both paths, agreement."""
    kind = "CUDA graphs" if report["graphs"] else "static plans run eagerly (no GPU: no graph)"
    return (f"static plans over {report['clips']} clips ({kind}): {report['captures']} made for {report['runs']} "
            f"plans run; tiles held at capacity {report['padding']:.3f}x those computed\n"
            f"map seconds, median after the first: static {report['static']:.4f}, op by op {report['eager']:.4f} "
            f"({report['static'] / report['eager']:.3f}x); first map {report['first_static']:.4f} and "
            f"{report['first_eager']:.4f}\n"
            f"largest |static - op-by-op| map value {report['max_map_difference']:.3g}; maps that went dense "
            f"{report['dense_maps']}")
