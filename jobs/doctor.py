"""`aosa doctor`: which backends this machine has (model execution, decoding, optical flow) and why not the others."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

import av
import torch

from aosa.engine.io.flow import flow_backends
from aosa.engine.io.video import DALI_CPU_CODECS, DALI_GPU_CODECS, dali_unavailable
from aosa.engine.models.backends import fidelity_label, tensorrt_unavailable
from aosa.engine.models.precision import PRECISIONS
from aosa.jobs.common import run_guarded

AVAILABLE = "available"


def _installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def model_backends() -> list[tuple[str, str]]:
    """Torch, the GPU, and whether each runner and precision can run here, with what it does to maps."""
    cuda = (f"{torch.cuda.device_count()} device(s): {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
            else "no GPU or driver")
    trt = tensorrt_unavailable(torch.device("cuda")) or AVAILABLE
    tf32 = AVAILABLE if torch.cuda.is_available() else "needs a CUDA device"
    rows = [("torch", torch.__version__), ("CUDA", cuda), ("backend eager", AVAILABLE),
            ("backend compile", f"{AVAILABLE} (torch.compile, inductor)"), ("backend tensorrt", trt)]
    return rows + [(f"precision {precision}", (tf32 if precision == "tf32" else AVAILABLE)
                    + f" ({fidelity_label(precision)})") for precision in PRECISIONS]


def decoders() -> list[tuple[str, str]]:
    readable = [name for name in ("h264", "hevc", "vp8", "vp9", "av1", "mjpeg") if _decodes(name)]
    dali = dali_unavailable()
    gpu = dali or ("needs CUDA" if not torch.cuda.is_available() else AVAILABLE)
    return [("decoder pyav", f"{AVAILABLE} (PyAV {av.__version__}: {', '.join(readable)})"),
            ("decoder dali cpu", dali or f"{AVAILABLE} ({', '.join(sorted(DALI_CPU_CODECS))})"),
            ("decoder dali gpu", gpu if gpu != AVAILABLE else f"{AVAILABLE} ({', '.join(sorted(DALI_GPU_CODECS))})")]


def _decodes(codec: str) -> bool:
    try:
        av.codec.Codec(codec, "r")
    except Exception:  # PyAV raises different errors for unknown and unbuilt codecs
        return False
    return True


def flows() -> list[tuple[str, str]]:
    return [(f"flow {name}", reason) for name, reason in flow_backends().items() if name != "auto"]


def cluster() -> list[tuple[str, str]]:
    auth = os.environ.get("RAY_AUTH_MODE", "unset (Ray's default: token for clusters it starts)")
    return [("ray", _installed("ray")), ("ray token auth", f"RAY_AUTH_MODE={auth}")]


def run(args: argparse.Namespace) -> int:
    rows = model_backends() + decoders() + flows() + cluster()
    width = max(len(name) for name, _ in rows)
    print("\n".join(f"{name:<{width}}  {status}" for name, status in rows))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="aosa doctor", description=__doc__)
    return run_guarded("doctor", run, parser, argv)


if __name__ == "__main__":
    sys.exit(main())
