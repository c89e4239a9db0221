"""`aosa benchmark --operators`: what one incremental AOSA map asks of torch at strides 8 and 4 (issue 23).

On a GPU many small operators cost their launches, so the count per map should not grow with the masks: operator
calls made from Python, those inside plans' runs (what a CUDA graph records), convolutions and CUDA kernels.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

from aosa.engine.io.flow import compute_flow, resolve_method
from aosa.engine.models.loading import LoadedModel
from aosa.engine.runtime.explain import choose_target
from aosa.jobs.benchmark_clips import normalized_clip, synthetic_video
from aosa.kernels.incremental import incremental_for
from aosa.kernels.incremental.model import RUN_LABEL
from aosa.kernels.methods import get_method
from aosa.kernels.space import InputSpace
from aosa.schemas.method_params import MethodParams

CONVOLUTIONS = ("aten::conv3d", "aten::convolution", "aten::_convolution", "aten::cudnn_convolution")


def _within(event: Any, label: str) -> bool:
    """The profiled event ran inside a record_function range named `label`."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name == label:
            return True
        parent = parent.cpu_parent
    return False


def operator_counts(run: Callable[[], object], device: torch.device) -> dict[str, int]:
    """What one call of `run` asks of torch: operator calls made from Python (outermost aten ops), those inside
    incremental plans' runs (what a CUDA graph records and replays; the rest is planning, checks and the map),
    convolutions among them, and CUDA kernels launched (on a GPU the cost of many small operators is their
    launches)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as profiled:
        run()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    events = profiled.events()
    outermost = [event for event in events if event.device_type == DeviceType.CPU and event.name.startswith("aten::")
                 and not (event.cpu_parent and event.cpu_parent.name.startswith("aten::"))]
    return {"operators": len(outermost), "in_runs": sum(_within(event, RUN_LABEL) for event in outermost),
            "convolutions": sum(event.name in CONVOLUTIONS for event in outermost),
            "kernels": sum(event.device_type == DeviceType.CUDA for event in events)}


def operator_table(model: LoadedModel, params: MethodParams, strides: Sequence[int] = (8, 4)) -> list[dict[str, Any]]:
    """Operator counts of one incremental AOSA map at each stride, with dense batches as large as a plan (so the
    count says how the incremental path scales with masks, not how many dense batches there are)."""
    prep = model.preprocessing
    video = synthetic_video(prep.frames, prep.height, prep.width)
    clip, flow = normalized_clip(video, model), compute_flow(video, resolve_method(params.flow))
    target = choose_target(model, clip, None, params.score)[0]
    space = InputSpace(mean=prep.mean, std=prep.std)
    rows = []
    for stride in strides:
        chosen = dataclasses.replace(params, stride=stride, incremental="on", batch_size=4096)
        method = get_method("aosa")(model, chosen, space)
        method.attribute(clip, target, flow)  # warm-up: pooled memory, lazily built tables
        counts = operator_counts(partial(method.attribute, clip, target, flow), model.device)
        with torch.no_grad():
            local = incremental_for(model, clip, "on", model(clip.unsqueeze(0)))[0].prefix.ops
        rows.append({"model": model.spec, "stride": stride, "masks": len(method.tubes(chosen, clip, flow)),
                     "local_layers": sum(op.kind != "pointwise" for op in local.values()),
                     "graphs": bool(method.graphs and method.graphs.applies(clip)), **counts})
    return rows


def format_operator_table(rows: list[dict[str, Any]]) -> str:
    """One line per (model, stride): masks, operator calls (all, and inside plans' runs), convolutions, CUDA
    kernels, local layers, and whether plans replayed as CUDA graphs (then no run calls an operator)."""
    lines = [f"{'model':<22} {'stride':>6} {'masks':>6} {'operators':>10} {'in runs':>8} {'convs':>6} {'kernels':>8} "
             f"{'local':>6} {'graphs':>6}"]
    lines += [f"{row['model']:<22} {row['stride']:>6} {row['masks']:>6} {row['operators']:>10} {row['in_runs']:>8} "
              f"{row['convolutions']:>6} {row['kernels']:>8} {row['local_layers']:>6} "
              f"{'yes' if row['graphs'] else 'no':>6}" for row in rows]
    return "\n".join(lines)
