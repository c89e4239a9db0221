"""`python -m aosa.jobs.gpu_check`: every GPU path in one run, as a table of what passed, with timings.

TensorRT compile and tolerance check, DALI GPU decode against PyAV, CUDA optical flow against the
CPU (when the installed cv2 has CUDA), an `aosa evaluate` run with two model actors, and seconds per
AOSA and AOSA-approx map (16x112x112, s=8) for r3d_18 and Hara's R3D-50 with each backend (eager fp32,
eager TF32, TensorRT fp16). On a machine without a GPU every check reports `skipped` and the exit status
is 0 (1 with --require-gpu).
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

from aosa.engine.datasets.synthetic import write_benchmark
from aosa.engine.errors import AosaError
from aosa.engine.io.flow import compute_flow, cuda_flow_available
from aosa.engine.io.video import dali_unavailable, decode_frames
from aosa.engine.models.backends import tensorrt_unavailable, use_backend
from aosa.engine.models.loading import load_model
from aosa.jobs import evaluate
from aosa.jobs.benchmark import run_benchmark
from aosa.jobs.common import run_guarded
from aosa.kernels.methods import AOSA, AOSAApprox
from aosa.schemas.method_params import MethodParams

SPEED_MODELS = ("torchvision:r3d_18", "hara:r3d_50")
Result = tuple[str, str, str]  # status, seconds, detail


class Skipped(Exception):
    """A check that cannot run on this machine (a library or a CUDA build missing); its message says why."""


def timed(check: Callable[[], str]) -> Result:
    """Run one check: ok with its detail, skipped with its reason, or FAIL with the error's first line."""
    began = time.perf_counter()
    try:
        detail = check()
    except Skipped as skip:
        return "skipped", "-", str(skip)
    except Exception as exc:  # a check's failure is a row of the table, not the end of the run
        return failed(exc, f"{time.perf_counter() - began:.2f}")
    return "ok", f"{time.perf_counter() - began:.2f}", detail


def failed(exc: Exception, seconds: str = "-") -> Result:
    """A FAIL row with the error's first line."""
    return "FAIL", seconds, str(exc).strip().splitlines()[0][:160]


def check_tensorrt(spec: str, cache: Path) -> str:
    model = load_model(spec, "cuda")
    if use_backend(model, "tensorrt", 16, cache) != "tensorrt":
        raise AosaError("TensorRT was not used")
    return "compiled, within tolerance of eager (engine cached)"


def check_dali(folder: Path) -> str:
    if reason := dali_unavailable():
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
    manifest = write_benchmark(folder / "flow", videos=1, seed=2)
    frames = decode_frames(next((manifest.parent / "videos").iterdir()), 0, 16, backend="pyav")
    difference = (compute_flow(frames, "farneback-cuda") - compute_flow(frames, "farneback")).abs().median()
    return f"median |CUDA - CPU| flow = {float(difference):.3f} px"


def check_evaluate(folder: Path) -> str:
    manifest = write_benchmark(folder / "eval", videos=4, seed=1, codec="libx264")
    code = evaluate.main(["--manifest", str(manifest), "--model", "probe", "--methods", "aosa,aosa-approx",
                          "--store", str(folder / "store"), "--model-actors", "2", "--device", "cuda"])
    if code != 0:
        raise AosaError(f"aosa evaluate exited with {code}")
    return "4 clips x 2 methods stored, 2 model actors on the GPU"


def speed_rows(spec: str, backend: str, cache: Path) -> list[tuple[str, Result]]:
    """Seconds per map and overhead ratios of AOSA and AOSA-approx, s=8, one model and backend."""
    model = load_model(spec, "cuda")
    use_backend(model, backend, 16, cache)
    report = run_benchmark(model, MethodParams(), [AOSA, AOSAApprox], repeats=3)
    speedup = report["speedups"].get("aosa")
    incremental = {"aosa": f"; dense / incremental seconds {speedup:.2f}" if speedup else ""}
    return [(f"{spec} {backend} {name}", ("ok", f"{report['stages'][name]['seconds']:.3f}",
                                          f"s/map; ratio to its plain passes {report['ratios'][name]:.3f}"
                                          + incremental.get(name, "")))
            for name in ("aosa", "aosa-approx")]


def run(args: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: every GPU check skipped")
        return 1 if args.require_gpu else 0
    cache = Path(args.engine_cache)
    failures = 0

    def report(name: str, result: Result) -> None:  # printed as each check ends, so a cut-off run keeps its rows
        nonlocal failures
        status, seconds, detail = result
        failures += status == "FAIL"
        print(f"{name:<40}  {status:<7} {seconds:>8}  {detail}", flush=True)

    print(f"{'check':<40}  {'status':<7} {'seconds':>8}  detail")
    with tempfile.TemporaryDirectory(prefix="aosa-gpu-") as temp:
        folder = Path(temp)
        report("DALI GPU decode", timed(lambda: check_dali(folder)))
        report("CUDA optical flow", timed(lambda: check_cuda_flow(folder)))
        report("evaluate, 2 actors", timed(lambda: check_evaluate(folder)))
        trt_reason = tensorrt_unavailable(torch.device("cuda"))
        for spec in SPEED_MODELS:
            report(f"TensorRT {spec}", ("skipped", "-", trt_reason) if trt_reason
                   else timed(lambda spec=spec: check_tensorrt(spec, cache)))
            for backend in ("eager", "eager-tf32") + (() if trt_reason else ("tensorrt",)):
                try:
                    for row in speed_rows(spec, backend, cache):
                        report(*row)
                except Exception as exc:  # one model's failure is a row, the other models still run
                    report(f"{spec} {backend}", failed(exc))
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aosa.jobs.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--require-gpu", action="store_true", help="exit 1 when there is no CUDA device")
    parser.add_argument("--engine-cache", default=str(Path.home() / ".cache" / "aosa" / "engines"))
    return run_guarded("gpu_check", run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
