"""`aosa benchmark`: time and peak memory of each method's map against the bare model passes it costs.

Every ratio is measured in one process (DESIGN.md section 8): exact occlusion maps are divided by the
same batched forward passes on pre-built clean clips, AOSA-approx by one forward + backward pass.

    python -m aosa.jobs.benchmark --model probe3d --stride 8 --batch-size 16 --json bench.json
"""

from __future__ import annotations

import argparse
import dataclasses
import ctypes
import ctypes.util
import gc
import json
import statistics
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import torch

from aosa.engine.errors import ConfigError
from aosa.engine.io.flow import compute_flow, resolve_method
from aosa.engine.models.counting import CountingModel
from aosa.engine.models.backends import describe_device, use_backend
from aosa.engine.models.loading import LoadedModel, load_model
from aosa.engine.models.timing import timed
from aosa.engine.runtime.explain import choose_target
from aosa.jobs.benchmark_clips import normalized_clip, synthetic_video
from aosa.jobs.common import add_backend_options, add_method_options, method_params, run_guarded
from aosa.jobs.graph_benchmark import format_graphs, graph_benchmark
from aosa.jobs.operator_benchmark import format_operator_table, operator_table
from aosa.jobs.whole_benchmark import format_whole, whole_benchmark
from aosa.kernels.anchors import grid_anchors
from aosa.kernels.incremental import NotIncremental, incremental_for
from aosa.kernels.incremental.shares import flop_shares
from aosa.kernels.methods import ExplanationMethod, get_method
from aosa.kernels.methods.occlusion_base import OcclusionMethod
from aosa.kernels.scoring import ScoreFunction
from aosa.kernels.space import InputSpace
from aosa.kernels.tubes import TubeSet
from aosa.schemas.method_params import MethodParams

SAMPLE_SECONDS = 0.002
MIB = 2 ** 20
DEFAULT_METHODS = "aosa,aosa-approx,osa"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="probe3d", help="model spec (default: probe3d)")
    add_backend_options(parser)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per stage after one warm-up (median)")
    parser.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated (default: {DEFAULT_METHODS})")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    parser.add_argument("--operators", action="store_true",
                        help="also count the torch operator calls (and CUDA kernels) of one incremental AOSA map at "
                             "s=8 and s=4, batches as large as a plan: how the incremental path scales with masks")
    parser.add_argument("--masks", type=int, default=None,
                        help="score only this many of each occlusion map's masks, evenly spaced (full-size models)")
    parser.add_argument("--whole", type=Path, default=None, metavar="VIDEO",
                        help="instead: a whole-video map of VIDEO per window against one clip's map (the first "
                             "of --methods), decode and flow shared (jobs.whole_benchmark)")
    parser.add_argument("--graph-clips", type=int, default=None, metavar="N",
                        help="instead: incremental AOSA maps of N different clips through one worker's static plans "
                             "(CUDA graphs on a GPU) against op by op: captures, padding, seconds "
                             "(jobs.graph_benchmark)")
    add_method_options(parser)
    return parser


class _CudaPeak:
    """Growth of the CUDA allocator's peak over a `with` block (max_memory_allocated, reset on entry)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.bytes = device, 0

    def __enter__(self) -> _CudaPeak:
        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self._start = torch.cuda.memory_allocated(self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        torch.cuda.synchronize(self.device)
        self.bytes = torch.cuda.max_memory_allocated(self.device) - self._start


def _release_free_memory() -> None:
    """Collect garbage and hand free heap pages back to the OS (glibc malloc_trim), so RSS growth is the stage's."""
    gc.collect()
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


class _RssPeak:
    """Growth of the process RSS over a `with` block, its peak sampled every 2 ms by a background thread."""

    def __init__(self) -> None:
        self._process, self.bytes = psutil.Process(), 0

    def __enter__(self) -> _RssPeak:
        _release_free_memory()
        self._start = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.bytes = max(self._peak, self._process.memory_info().rss) - self._start


def measure(run: Callable[[], object], device: torch.device) -> tuple[float, int]:
    """Seconds and peak memory growth in bytes of one call of `run` (CUDA work synchronized)."""
    with _CudaPeak(device) if device.type == "cuda" else _RssPeak() as peak:
        seconds, _ = timed(run, device)
    return seconds, peak.bytes


@dataclass
class Stage:
    """One timed step; its ratio is its median time over the `reference` stage's. `held`: bytes the step keeps from
    one run to the next (an occlusion method's scratch pool), counted in its peak: growth alone would miss them."""

    name: str
    run: Callable[[], object]
    n_forward: int | None = None
    reference: str | None = None
    held: Callable[[], int] | None = None
    seconds: list[float] = field(default_factory=list)
    peaks: list[int] = field(default_factory=list)

    def record(self, device: torch.device) -> None:
        kept = self.held() if self.held else 0
        seconds, peak = measure(self.run, device)
        self.seconds.append(seconds)
        self.peaks.append(kept + peak)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


class RecordingModel(CountingModel):
    """A CountingModel that also keeps the size of every batch, to replay the same passes on clean clips."""

    def __init__(self, model: LoadedModel) -> None:
        super().__init__(model)
        self.batch_sizes: list[int] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        self.batch_sizes.append(batch.shape[0])
        return super().__call__(batch)


def forward_passes(model: LoadedModel, clip: torch.Tensor, sizes: list[int],
                   layout: torch.memory_format = torch.contiguous_format) -> Callable[[], None]:
    """Forward passes alone (no grad) on batches of `sizes` copies of `clip` in `layout`, built before any timing."""
    batch = clip.unsqueeze(0).expand(max(sizes), *clip.shape).contiguous(memory_format=layout)

    def run() -> None:
        with torch.no_grad():
            for size in sizes:
                model(batch[:size])
    return run


def forward_backward(model: LoadedModel, clip: torch.Tensor, target: int, score: str) -> Callable[[], None]:
    """One forward and one backward pass of the target score to the input clip."""
    scorer = ScoreFunction(model, target, score)

    def run() -> None:
        x = clip.detach().clone().requires_grad_(True)
        torch.autograd.grad(scorer(x.unsqueeze(0))[0], x)
    return run


def method_stages(method_class: type[ExplanationMethod], model: LoadedModel, params: MethodParams,
                  clip: torch.Tensor, target: int, flow: torch.Tensor) -> list[Stage]:
    """The reference stage and the map stages of a method; one untimed recorded map is the warm-up. An exact
    occlusion method gets a dense and (where the model traces) an incremental map, both over the same dense
    forward passes on contiguous batches; `NAME:forwards:fed` replays them in the layout the dense path builds
    batches in, where that differs (its overhead over them); on a GPU `NAME:incremental` replays its plans as CUDA
    graphs and `NAME:incremental:eager` runs them op by op; `NAME` itself is the path the params choose
    (`--incremental`, default auto)."""
    name = method_class.name
    space = InputSpace(mean=model.preprocessing.mean, std=model.preprocessing.std)
    recorder = RecordingModel(model)
    occlusion = issubclass(method_class, OcclusionMethod)
    recorded = dataclasses.replace(params, incremental="off") if occlusion else params
    method_class(recorder, recorded, space).attribute(clip, target, flow)
    if not occlusion:
        reference = Stage(f"{name}:fwd+bwd", forward_backward(model, clip, target, params.score), 1)
        method = method_class(model, params, space)
        return [reference, Stage(name, lambda: method.attribute(clip, target, flow), recorder.clips, reference.name)]
    reference = Stage(f"{name}:forwards", forward_passes(model, clip, recorder.batch_sizes), recorder.clips)
    stages = [reference]
    if model.batch_format != torch.contiguous_format:  # the dense path feeds another layout: time those passes too
        stages.append(Stage(f"{name}:forwards:fed", forward_passes(model, clip, recorder.batch_sizes,
                                                                   model.batch_format), recorder.clips))
    paths = ["dense", "incremental"] + (["incremental:eager"] if model.device.type == "cuda" else [])
    for path in paths:
        mode = "off" if path == "dense" else "on"
        method = method_class(model, dataclasses.replace(params, incremental=mode), space)
        if path == "incremental:eager":
            method.graphs = None
        try:
            method.attribute(clip, target, flow)  # warm-up; an untraceable model has no incremental stage
        except NotIncremental:
            continue
        stages.append(Stage(f"{name}:{path}", partial(method.attribute, clip, target, flow), recorder.clips,
                            reference.name, lambda method=method: method.pool.nbytes))
    chosen = method_class(model, params, space)
    chosen.attribute(clip, target, flow)  # warm-up, as every other stage
    return stages + [Stage(name, partial(chosen.attribute, clip, target, flow), recorder.clips, reference.name,
                           lambda: chosen.pool.nbytes)]


def limited(method_class: type[ExplanationMethod], masks: int | None) -> type[ExplanationMethod]:
    """`method_class` scoring only `masks` of its masks, evenly spaced (all when None or not an occlusion
    method): full-size models at s=4 would need minutes per dense map on a CPU; ratios stay like for like."""
    if masks is None or not issubclass(method_class, OcclusionMethod):
        return method_class

    class Limited(method_class):  # type: ignore[misc, valid-type]
        @classmethod
        def tubes(cls, params: MethodParams, inputs: torch.Tensor, flow: torch.Tensor | None) -> TubeSet:
            tubes = super().tubes(params, inputs, flow)
            keep = torch.linspace(0, len(tubes) - 1, min(masks, len(tubes))).round().long().unique()
            return TubeSet(tubes.boxes, tubes.groups[keep], tubes.height, tubes.width)

    Limited.__name__ = method_class.__name__
    return Limited


def run_benchmark(model: LoadedModel, params: MethodParams, methods: list[type[ExplanationMethod]],
                  repeats: int) -> dict[str, Any]:
    """Time every stage `repeats` times, interleaved, after one untimed flow and one untimed map per method
    (the warm-up: the references replay passes of the same shapes); results as a dict."""
    prep = model.preprocessing
    video = synthetic_video(prep.frames, prep.height, prep.width)
    clip = normalized_clip(video, model)
    target = choose_target(model, clip, None, params.score)[0]
    flow_method = resolve_method(params.flow)
    flow = compute_flow(video, flow_method)
    stages = [Stage(f"flow:{flow_method}", lambda: compute_flow(video, flow_method))]
    for method_class in methods:
        stages += method_stages(method_class, model, params, clip, target, flow)
    for _ in range(repeats):
        for stage in stages:
            stage.record(model.device)
    by_name = {stage.name: stage for stage in stages}
    results = {stage.name: {
        "seconds": stage.median, "seconds_all": stage.seconds, "n_forward": stage.n_forward,
        "reference": stage.reference,
        "ratio": stage.median / by_name[stage.reference].median if stage.reference else None,
        "peak_mib": max(stage.peaks) / MIB,
    } for stage in stages}
    speedups = {cls.name: by_name[f"{cls.name}:dense"].median / by_name[f"{cls.name}:incremental"].median
                for cls in methods if f"{cls.name}:incremental" in by_name}
    overheads = {cls.name: by_name[f"{cls.name}:dense"].median / by_name[f"{cls.name}:forwards:fed"].median
                 for cls in methods if f"{cls.name}:forwards:fed" in by_name}
    with torch.no_grad():
        clean = model(clip.unsqueeze(0))  # what the traced module must reproduce
    counted = {cls.name: dataclasses.asdict(flop_shares(incremental_for(model, clip, "on", clean)[0],
                                                        cls.tubes(params, clip, flow), params.batch_size))
               for cls in methods if f"{cls.name}:incremental" in by_name}
    return {
        "speedups": speedups, "overheads": overheads, "flop_shares": counted,
        "model": model.spec, "device": describe_device(model.device), "torch": torch.__version__,
        "threads": torch.get_num_threads(), "batch_format": str(model.batch_format).removeprefix("torch."),
        "clip": list(clip.shape), "target": target,
        "anchors": len(grid_anchors(prep.height, prep.width, params.stride)), "batch_size": params.batch_size,
        "repeats": repeats, "params": params.to_dict(), "memory": memory_metric(model.device), "stages": results,
        "ratios": {name: stage["ratio"] for name, stage in results.items() if stage["ratio"] is not None},
    }


def memory_metric(device: torch.device) -> str:
    """What the peak memory column measures on `device`."""
    if device.type == "cuda":
        return ("growth of torch.cuda.max_memory_allocated over the stage (peak reset per stage), plus the scratch "
                "memory an occlusion method kept from its last map")
    return (f"growth of the process RSS over the stage, peak sampled every {SAMPLE_SECONDS * 1000:g} ms (psutil), "
            "plus the scratch memory an occlusion method kept from its last map")


def format_report(report: dict[str, Any]) -> str:
    """Header lines and one table row per stage: median seconds, forwards, ratio to its reference, peak MiB."""
    params = report["params"]
    lines = [
        f"model      {report['model']}   clip {'x'.join(map(str, report['clip']))}   target {report['target']}",
        f"device     {report['device']}   backend {report.get('backend', 'eager')}   torch {report['torch']}   "
        f"threads {report['threads']}   batches {report['batch_format']}",
        f"N          {report['anchors']} anchors (stride {params['stride']}, mask {params['mask']}, "
        f"top-k {params['top_k']})   batch size {report['batch_size']}   repeats {report['repeats']} (median)",
        "n_forward  clips scored, the clean clip's one included (exact AOSA: N + 1; NAME:incremental scores the",
        "           same clips without full passes)" + (f"; {report['masks']} masks per map" if report.get("masks") else ""),
        f"memory     {report['memory']}; the max over repeats",
        "",
        f"{'stage':<20} {'seconds':>10} {'n_forward':>10} {'ratio':>8}  {'vs':<20} {'peak MiB':>9}",
    ]
    for name, stage in report["stages"].items():
        forwards = "-" if stage["n_forward"] is None else str(stage["n_forward"])
        ratio = "-" if stage["ratio"] is None else f"{stage['ratio']:.3f}"
        lines.append(f"{name:<20} {stage['seconds']:>10.4f} {forwards:>10} {ratio:>8}  "
                     f"{stage['reference'] or '-':<20} {stage['peak_mib']:>9.1f}")
    lines += [f"speed-up   {name}: dense seconds / incremental seconds = {speedup:.2f}"
              for name, speedup in report["speedups"].items()]
    lines += [f"overhead   {name}: dense seconds / the same passes on batches laid out as the dense path builds "
              f"them = {overhead:.3f}" for name, overhead in report.get("overheads", {}).items()]
    lines += [f"counted    {name}: the incremental plan computes {shares['planned']:.3f} of the dense flops; each "
              f"mask's exactly changed outputs are {shares['changed']:.3f} (sharing tiles between masks can go below this)"
              for name, shares in report.get("flop_shares", {}).items()]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ConfigError(f"--repeats must be at least 1, got {args.repeats}")
    names = list(dict.fromkeys(name.strip() for name in args.methods.split(",") if name.strip()))
    if not names:
        raise ConfigError("--methods names no method")
    try:
        methods = [get_method(name) for name in names]
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if args.masks is not None and args.masks < 1:
        raise ConfigError(f"--masks must be at least 1, got {args.masks}")
    model, params = load_model(args.model, args.device), method_params(args)
    backend = use_backend(model, args.backend, params.batch_size, args.engine_cache)
    if args.graph_clips is not None:
        if args.graph_clips < 1:
            raise ConfigError(f"--graph-clips must be at least 1, got {args.graph_clips}")
        report = graph_benchmark(model, params, args.graph_clips) | {"backend": backend}
        print(format_graphs(report))
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
        return 0
    if args.whole is not None:
        report = whole_benchmark(args.whole, model, names[0], params, args.repeats) | {"backend": backend}
        print(format_whole(report))
        if args.json is not None:
            args.json.write_text(json.dumps(report, indent=2))
        return 0
    report = run_benchmark(model, params, [limited(cls, args.masks) for cls in methods], args.repeats)
    report["masks"], report["backend"] = args.masks, backend
    print(format_report(report))
    if args.operators:
        report["operators"] = operator_table(model, params)
        print("\n" + format_operator_table(report["operators"]))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("benchmark", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
