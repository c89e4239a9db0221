"""What every job shares: method, backend and cluster options on the command line, opening a store, and
one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from aosa.engine.errors import AosaError, ConfigError
from aosa.engine.models.backends import BACKENDS, fidelity_label
from aosa.engine.models.precision import PRECISIONS
from aosa.engine.store.reader import StoreReader
from aosa.schemas.method_params import AGGREGATES, FILLS, FLOWS, INCREMENTAL, SCORES, MethodParams, ParamsError
from aosa.schemas.preprocessing import PreprocessingError

EXPECTED_ERRORS = (AosaError, ParamsError, PreprocessingError)


def add_method_options(parser: argparse.ArgumentParser) -> None:
    """The options of DESIGN.md section 10 that configure every explanation method."""
    defaults = MethodParams()
    group = parser.add_argument_group("method options")
    group.add_argument("--stride", type=int, default=defaults.stride, help="anchor spacing s in pixels")
    group.add_argument("--mask", type=int, default=defaults.mask, help="tube box side in pixels")
    group.add_argument("--top-k", type=int, default=defaults.top_k, help="co-occurring partners per mask (0 = single)")
    group.add_argument("--fill", choices=FILLS, default=None,
                       help="occlusion fill (default: mean; conditional for aosa-approx)")
    group.add_argument("--score", choices=SCORES, default=defaults.score, help="explained score")
    group.add_argument("--no-relu", dest="relu", action="store_false", help="aosa-approx: signed first-order drops")
    group.add_argument("--aggregate", choices=AGGREGATES, default=defaults.aggregate, help="map aggregation")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="occluded clips per forward pass")
    group.add_argument("--samples", type=int, default=defaults.samples, help="conditional fill draws (exact methods)")
    group.add_argument("--radius", type=int, default=defaults.radius, help="conditional fill neighbourhood")
    group.add_argument("--flow", choices=FLOWS, default=defaults.flow, help="optical flow algorithm")
    group.add_argument("--seed", type=int, default=defaults.seed, help="seed of every random draw")
    group.add_argument("--layer", default=defaults.layer, help="gradcam: dotted module path (default: last Conv3d)")
    group.add_argument("--noise", type=float, default=defaults.noise,
                       help="smoothgrad: noise std as a fraction of the input range")
    group.add_argument("--smooth-samples", type=int, default=defaults.smooth_samples,
                       help="smoothgrad: noisy copies averaged")
    group.add_argument("--areas", default=defaults.areas, help="step: kept fractions of the clip, one mask each")
    group.add_argument("--iterations", type=int, default=defaults.iterations, help="step: optimizer steps")
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate, help="step: Adam step size")
    group.add_argument("--smoothness", type=float, default=defaults.smoothness,
                       help="step: weight of the spatio-temporal smoothness term")
    add_incremental_option(group)


def add_incremental_option(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--incremental: a method option, which the nightly also takes and passes on to every part."""
    parser.add_argument("--incremental", choices=INCREMENTAL, default=MethodParams().incremental,
                        help="aosa/osa: incremental inference over each mask's changed region (on), dense "
                             "forwards (off), or incremental where the model's local prefix holds most of its work")


def add_backend_options(parser: argparse.ArgumentParser) -> None:
    """Where and how the model runs: device, execution backend, compiled-engine cache."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--backend", choices=BACKENDS, default="auto", metavar="BACKEND",
                        help="RUNNER[-PRECISION]: eager torch, compile (torch.compile, inductor) or tensorrt (fp16 "
                             "engine, GPUs only), in fp32 (the default, exact), tf32 (CUDA), bf16 or fp16; auto: "
                             "TensorRT when it can run, else eager. " + backend_fidelity())
    parser.add_argument("--engine-cache", type=Path, default=Path.home() / ".cache" / "aosa" / "engines",
                        help="where compiled TensorRT engines are kept")


def backend_fidelity() -> str:
    """One clause per precision saying how its maps compare with fp32's, as measured (for --help)."""
    return "Maps: " + "; ".join(f"{precision} {fidelity_label(precision)}" for precision in PRECISIONS) + "."


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """Where a Ray run's model actors go, for `aosa evaluate` and `aosa nightly` alike: the cluster, how many
    actors, and their device and backend (add_backend_options)."""
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS"),
                        help="Ray cluster to join (default: $RAY_ADDRESS, else an embedded local cluster)")
    parser.add_argument("--model-actors", type=int, default=2, help="model actors (one per GPU on a cluster)")
    add_backend_options(parser)


def cluster_argv(args: argparse.Namespace) -> list[str]:
    """Parsed `add_cluster_options` and --incremental as `aosa evaluate` arguments (the nightly's parts get them)."""
    address = ["--address", args.address] if args.address else []
    return ["--model-actors", str(args.model_actors), "--device", args.device, "--backend", args.backend,
            "--engine-cache", str(args.engine_cache), "--incremental", args.incremental, *address]


def open_store(path: Path) -> StoreReader:
    """The store at `path`, which must be an existing directory."""
    if not path.is_dir():
        raise ConfigError(f"store {path} is not a directory")
    return StoreReader(path)


def method_params(args: argparse.Namespace) -> MethodParams:
    """MethodParams from parsed `add_method_options` arguments."""
    return MethodParams(stride=args.stride, mask=args.mask, top_k=args.top_k, fill=args.fill, score=args.score,
                        relu=args.relu, aggregate=args.aggregate, batch_size=args.batch_size,
                        samples=args.samples, radius=args.radius, flow=args.flow, seed=args.seed,
                        layer=args.layer, noise=args.noise, smooth_samples=args.smooth_samples, areas=args.areas,
                        iterations=args.iterations, learning_rate=args.learning_rate, smoothness=args.smoothness,
                        incremental=args.incremental)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """A SIGTERM (a scheduler stopping the job) ends it like Ctrl-C: an evaluation is stored as `interrupted`,
    resumable; a server stops and removes its runtime file."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_guarded(name: str, job: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser,
                argv: Sequence[str] | None) -> int:
    """Parse `argv` and run `job`; an expected failure prints `aosa NAME: error: ...` and returns 2."""
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"aosa {name}: %(levelname)s: %(message)s")
    try:
        return job(args)
    except EXPECTED_ERRORS as exc:
        print(f"aosa {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aosa {name}: interrupted", file=sys.stderr)
        return 130
