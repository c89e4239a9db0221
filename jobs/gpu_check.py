"""`python -m aosa.jobs.gpu_check`: every GPU figure of the project in one run of about eight minutes or less.

Sections print as they end, so a run cut off keeps what it printed; a section that would overrun `--budget`
is skipped with a line saying so:
  paths      DALI GPU decode against PyAV, CUDA optical flow against the CPU, TensorRT (skipped where missing)
  per map    seconds of an exact AOSA map (r3d_18, s=8, 196 masks) per backend (fp32, TF32, bf16, fp16,
             compile), dense and incremental (plans replayed as CUDA graphs, and op by op), with the ratio to
             the same plain forward passes
  operators  torch operator calls and CUDA kernels of one incremental map at s=8 and s=4
  graphs     incremental maps of GRAPH_CLIPS different clips replayed as CUDA graphs against op by op: captures,
             padding, seconds, agreement (`aosa benchmark --graph-clips`)
  fidelity   each precision's maps against fp32 on the motion and appearance probes (`aosa precision`)
  dataset    `aosa evaluate` of AOSA on r3d_18 over synthetic clips, several model actors sharing the GPU:
             maps per second, the GPU's busy fraction (NVML), every stage's busy seconds, the run's device row
On a machine without a GPU every section is skipped and the exit status is 0 (1 with --require-gpu); otherwise
the exit status is the number of failed checks.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from aosa.engine.datasets.synthetic import FRAMES, write_benchmark
from aosa.engine.errors import AosaError
from aosa.engine.io.flow import compute_flow, cuda_flow_available
from aosa.engine.io.video import dali_unavailable, decode_frames
from aosa.engine.models.backends import describe_device, tensorrt_unavailable, use_backend
from aosa.engine.models.loading import load_model
from aosa.engine.runtime.gpu_usage import GpuBusy
from aosa.jobs import evaluate, precision, query, report
from aosa.jobs.benchmark import run_benchmark
from aosa.jobs.common import run_guarded
from aosa.jobs.graph_benchmark import format_graphs, graph_benchmark
from aosa.jobs.operator_benchmark import format_operator_table, operator_table
from aosa.kernels.methods import AOSA
from aosa.schemas.method_params import MethodParams

DEVICE = "cuda"
SPEED_MODEL = "torchvision:r3d_18"
MAP_STRIDE = 8  # anchor stride of every map the check times or compares (s=8: 196 masks at 112 px)
SPEED_BACKENDS = (("eager", 64), ("eager-tf32", 16), ("eager-tf32", 64), ("eager-tf32", 196), ("eager-bf16", 64),
                  ("eager-fp16", 64), ("compile-tf32", 64), ("compile-bf16", 64))
FIDELITY_BACKENDS = "eager-tf32,eager-bf16,eager-fp16"
FIDELITY_CLIPS, DATASET_CLIPS, GRAPH_CLIPS = 50, 200, 12
DATASET_BACKEND, DATASET_DECODE_ACTORS = "eager-tf32", 6
Result = tuple[str, str, str]  # status, seconds, detail


class Skipped(Exception):
    """A check that cannot run on this machine (a library or a CUDA build missing); its message says why."""


class Deadline:
    """The run's time budget: sections ask whether their estimate still fits."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def fits(self, seconds: float) -> bool:
        return time.monotonic() + seconds <= self.end


def timed(check: Callable[[], str]) -> Result:
    """Run one check: ok with its detail, skipped with its reason, or FAIL with the error's first line."""
    began = time.perf_counter()
    try:
        detail = check()
    except Skipped as skip:
        return "skipped", "-", str(skip)
    except Exception as exc:  # a check's failure is a row of the table, not the end of the run
        return "FAIL", f"{time.perf_counter() - began:.2f}", str(exc).strip().splitlines()[0][:160]
    return "ok", f"{time.perf_counter() - began:.2f}", detail


def check_dali(folder: Path) -> str:
    if reason := dali_unavailable() or (None if torch.cuda.is_available() else "needs a CUDA device"):
        raise Skipped(reason)
    manifest = write_benchmark(folder / "decode", videos=2, seed=0, codec="libx264")
    video = next((manifest.parent / "videos").iterdir())
    gpu = decode_frames(video, 0, 16, backend="dali", device="cuda").astype(np.int16)
    cpu = decode_frames(video, 0, 16, backend="pyav").astype(np.int16)
    difference = float(np.abs(gpu - cpu).mean())
    if difference > 3.0:
        raise AosaError(f"DALI GPU and PyAV frames differ by {difference:.2f} on average")
    return f"H.264 decoded on the GPU; mean |DALI - PyAV| = {difference:.2f}"


def check_cuda_flow(folder: Path) -> str:
    if not cuda_flow_available():
        raise Skipped("the installed cv2 has no CUDA")
    manifest = write_benchmark(folder / "flow", videos=1, seed=2, codec=FRAMES)
    frames = decode_frames(next((manifest.parent / "videos").iterdir()), 0, 16)
    difference = (compute_flow(frames, "farneback-cuda") - compute_flow(frames, "farneback")).abs().median()
    return f"median |CUDA - CPU| flow = {float(difference):.3f} px"


def check_tensorrt(cache: Path) -> str:
    if reason := tensorrt_unavailable(torch.device("cuda")):
        raise Skipped(reason)
    model = load_model(SPEED_MODEL, DEVICE)
    if use_backend(model, "tensorrt", 16, cache) != "tensorrt":
        raise AosaError("TensorRT was not used")
    return "compiled, within tolerance of eager (engine cached)"


def per_map(backend: str, batch_size: int, cache: Path) -> str:
    """Seconds of one exact AOSA map (median of 3) dense and incremental, each over its plain forward passes (fed:
    the same passes on batches in the dense path's layout, where that is not contiguous)."""
    model = load_model(SPEED_MODEL, DEVICE)
    use_backend(model, backend, batch_size, cache)
    params = MethodParams(stride=MAP_STRIDE, batch_size=batch_size)
    stages = run_benchmark(model, params, [AOSA], repeats=3)["stages"]
    passes = stages["aosa:forwards"]["seconds"]
    fed = f" (fed {stages['aosa:forwards:fed']['seconds']:.4f} s)" if "aosa:forwards:fed" in stages else ""
    parts = [f"passes {passes:.4f} s{fed}"] + [f"{path} {stages[f'aosa:{path}']['seconds']:.4f} s "
                                          f"({stages[f'aosa:{path}']['ratio']:.2f}x passes, "
                                          f"{stages[f'aosa:{path}']['peak_mib']:.0f} MiB)"
                                          for path in ("dense", "incremental", "incremental:eager")
                                          if f"aosa:{path}" in stages]
    if "aosa:incremental" not in stages:
        parts.append("incremental: not exact in this precision (dense only)")
    return "; ".join(parts)


def operators() -> str:
    """Operator calls and CUDA kernels of one incremental AOSA map at s=8 and s=4, probe and r3d_18."""
    rows = [row for spec in ("probe", SPEED_MODEL)
            for row in operator_table(load_model(spec, DEVICE), MethodParams(), strides=(8, 4))]
    print(format_operator_table(rows), flush=True)
    return "table above"


def graphs() -> str:
    """Incremental fp32 AOSA maps of GRAPH_CLIPS clips on r3d_18 through CUDA graphs and op by op."""
    report = graph_benchmark(load_model(SPEED_MODEL, DEVICE), MethodParams(batch_size=64), GRAPH_CLIPS)
    print(format_graphs(report), flush=True)
    if report["max_map_difference"] > 1e-3:
        raise AosaError(f"graph replays differ from op-by-op maps by {report['max_map_difference']:.3g}")
    return "lines above"


def fidelity(folder: Path, out: Path | None) -> str:
    """`aosa precision` on FIDELITY_CLIPS clips of each probe task (frame directories: no FFmpeg needed)."""
    for task in ("motion", "appearance"):
        manifest = write_benchmark(folder / f"fidelity-{task}", FIDELITY_CLIPS, seed=11, codec=FRAMES, task=task)
        json_out = ["--json", str(out / f"precision-{task}.json")] if out else []
        code = precision.main(["--manifest", str(manifest), "--model", f"probe:{task}", "--backends",
                               FIDELITY_BACKENDS, "--limit", str(FIDELITY_CLIPS), "--device", DEVICE,
                               "--stride", str(MAP_STRIDE), *json_out])
        if code:
            raise AosaError(f"aosa precision exited with {code} on the {task} probe")
    return "tables above"


def dataset(folder: Path, model_actors: int) -> str:
    """AOSA on r3d_18 (TF32) over DATASET_CLIPS synthetic clips, metrics included, GPU utilization sampled."""
    manifest = folder / "dataset" / "manifest.csv"
    if not manifest.exists():
        write_benchmark(manifest.parent, DATASET_CLIPS, seed=5, codec=FRAMES)
    store, run_id = folder / "store", f"gpu-dataset-{model_actors}"
    argv = ["--manifest", str(manifest), "--model", SPEED_MODEL, "--methods", "aosa", "--store", str(store),
            "--run-id", run_id, "--device", DEVICE, "--backend", DATASET_BACKEND, "--batch-size", "64",
            "--metric-batch-size", "29", "--model-actors", str(model_actors), "--decode-actors",
            str(DATASET_DECODE_ACTORS), "--max-in-flight", str(8 * model_actors)]
    began = time.perf_counter()
    with GpuBusy() as busy:
        code = evaluate.main(argv)
    seconds = time.perf_counter() - began
    if code:
        raise AosaError(f"aosa evaluate exited with {code}")
    report.main(["--store", str(store), "--run-id", run_id, "--table", "stages"])
    query.main(["--store", str(store), f"SELECT run_id, status, device FROM runs WHERE run_id = '{run_id}'"])
    gpus = ", ".join(f"{gpu.name} busy {gpu.busy:.0%} of {len(gpu.percents)} samples" for gpu in busy.gpus)
    return (f"{DATASET_CLIPS} units in {seconds:.1f} s = {DATASET_CLIPS / seconds:.2f} units/s (Ray start and "
            f"model loading included), {model_actors} model actors sharing the GPU; {gpus}")


def run(args: argparse.Namespace) -> int:
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: every GPU check skipped")
        return 1 if args.require_gpu else 0
    deadline, cache, failures = Deadline(args.budget), Path(args.engine_cache), 0
    print(f"{describe_device(torch.device(DEVICE))}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")

    def report_row(name: str, estimate: float, check: Callable[[], str]) -> None:
        nonlocal failures
        status, seconds, detail = timed(check) if deadline.fits(estimate) else ("skipped", "-", "out of --budget")
        failures += status == "FAIL"
        print(f"{name:<34}  {status:<7} {seconds:>8}  {detail}", flush=True)

    with tempfile.TemporaryDirectory(prefix="aosa-gpu-") as temp:
        folder = Path(temp)
        report_row("DALI GPU decode", 10, lambda: check_dali(folder))
        report_row("CUDA optical flow", 10, lambda: check_cuda_flow(folder))
        report_row("TensorRT", 60, lambda: check_tensorrt(cache))
        sections = set(args.sections.split(","))
        for actors in map(int, args.model_actors.split(",")) if "dataset" in sections else ():
            report_row(f"dataset run, {actors} actors", 90, lambda n=actors: dataset(folder, n))
        maps = [(name, int(size)) for name, _, size in (entry.partition(":") for entry in args.maps.split(","))]
        eager = [(backend, size) for backend, size in maps if not backend.startswith("compile")]
        for backend, batch_size in eager if "maps" in sections else ():
            report_row(f"map {backend} b={batch_size}", 30, lambda b=backend, n=batch_size: per_map(b, n, cache))
        if "fidelity" in sections:
            report_row("fidelity", 90, lambda: fidelity(folder, args.out))
        if "operators" in sections:
            report_row("operator counts", 40, operators)
        if "graphs" in sections:
            report_row("CUDA graphs over clips", 40, graphs)
        for backend, batch_size in [entry for entry in maps if entry not in eager] if "maps" in sections else ():
            report_row(f"map {backend} b={batch_size}", 90, lambda b=backend, n=batch_size: per_map(b, n, cache))
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aosa.jobs.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 when there is no CUDA device")
    parser.add_argument("--engine-cache", default=str(Path.home() / ".cache" / "aosa" / "engines"))
    parser.add_argument("--budget", type=float, default=450, help="seconds; sections that would overrun are skipped")
    parser.add_argument("--model-actors", default="2,4",
                        help="model actors sharing the GPU in the dataset run; one run per entry")
    parser.add_argument("--sections", default="dataset,maps,fidelity,operators,graphs",
                        help="which sections to run")
    parser.add_argument("--maps", default=",".join(f"{backend}:{size}" for backend, size in SPEED_BACKENDS),
                        help="BACKEND:BATCH entries of the per-map table")
    parser.add_argument("--out", type=Path, default=None, help="folder for the fidelity JSON files")
    return run_guarded("gpu_check", run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
