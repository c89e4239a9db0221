"""`aosa evaluate`: every video of a manifest x every method, on Ray, into a Parquet result store.

Exit status: 0 when every unit is ok, 2 for a usage or configuration error, 3 when some units failed (they
are error rows in the store; the last line says how many), 130 when interrupted (resume with the run id).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import sys
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import ray

from aosa.engine.datasets.manifests import count_rows, iter_manifest
from aosa.engine.errors import ConfigError
from aosa.engine.runtime.evaluation import Evaluation, Summary
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.writer import RunWriter
from aosa.jobs.common import add_cluster_options, add_method_options, method_params, run_guarded, sigterm_interrupts
from aosa.schemas.run_config import RunConfig, check_clips, config_changes, parse_methods

EXIT_UNITS_FAILED = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa evaluate", description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True, help="CSV or Parquet manifest")
    parser.add_argument("--model", required=True, help="model SPEC (see `aosa explain --help`)")
    parser.add_argument("--methods", default="aosa,aosa-approx,osa",
                        help="comma-separated; an entry may carry options: aosa:top_k=0,aosa-approx:relu=false")
    parser.add_argument("--store", type=Path, required=True, help="result store directory")
    parser.add_argument("--run-id", default=None,
                        help="run id (default: a new one); reuse it, with the options it was stored with, to resume")
    parser.add_argument("--limit", type=int, default=None, help="only the first N videos")
    parser.add_argument("--decoder", default="auto", choices=("auto", "pyav", "dali"))
    parser.add_argument("--decode-device", default="cpu", choices=("cpu", "cuda"),
                        help="cuda: decode actors take a GPU share so DALI's GPU decoder reads H.264/HEVC/VP9/AV1")
    parser.add_argument("--start", type=int, default=0, help="first frame of every clip")
    parser.add_argument("--clips", default="first",
                        help="first: a unit explains the clip from --start; all: every window of the model's clip "
                             "length over the whole video, half a clip apart, stitched into one map (one row per "
                             "video and method, with temporal metrics beside the first clip's); every:HOP: likewise, "
                             "HOP frames apart")
    parser.add_argument("--decode-actors", type=int, default=1, help="decode + flow actors")
    parser.add_argument("--max-in-flight", type=int, default=4, help="videos decoded or scored at once")
    parser.add_argument("--metric-batch-size", type=int, default=16, help="clips per deletion/insertion pass")
    parser.add_argument("--retry-errors", action="store_true",
                        help="on resume, compute the units stored as errors again (default: keep them)")
    add_cluster_options(parser)
    add_method_options(parser)
    return parser


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def config_from_args(args: argparse.Namespace) -> RunConfig:
    if min(args.model_actors, args.decode_actors, args.max_in_flight) < 1:
        raise ConfigError("--model-actors, --decode-actors and --max-in-flight must be at least 1")
    if check_clips(args.clips) != "first" and args.decoder == "dali":
        raise ConfigError(f"--clips {args.clips} streams whole videos through PyAV (Pillow for frame directories); "
                          "--decoder dali decodes first clips only")
    return RunConfig(run_id=args.run_id or new_run_id(), manifest=str(args.manifest.resolve()), model=args.model,
                     methods=tuple(parse_methods(args.methods, method_params(args))),
                     device=args.device, backend=args.backend, engine_cache=str(args.engine_cache),
                     decoder=args.decoder, decode_device=args.decode_device,
                     model_actors=args.model_actors, decode_actors=args.decode_actors,
                     max_videos_in_flight=args.max_in_flight, metric_batch_size=args.metric_batch_size,
                     start=args.start, limit=args.limit, retry_errors=args.retry_errors, clips=args.clips)


def connect(address: str | None, cpus_needed: int) -> None:
    """Join the cluster at `address`, or start an embedded local one with enough CPU slots for the actors: always
    a new one (`address="local"`), never a cluster that `ray start` or a stale address file left on the machine."""
    if ray.is_initialized():
        return
    if address:
        ray.init(address=address)
    else:
        ray.init(address="local", num_cpus=max(os.cpu_count() or 1, cpus_needed), include_dashboard=False)


def run(args: argparse.Namespace) -> int:
    summary = evaluate(args)
    print(f"run {summary.run_id}: {summary.ok} units ok, {summary.failed} failed, "
          f"{summary.skipped} already stored -> {args.store}")
    return EXIT_UNITS_FAILED if summary.failed else 0


def evaluate(args: argparse.Namespace) -> Summary:
    """Run (or resume) the evaluation the arguments describe, holding the run (a second writer is refused at
    once); a resume whose options change what the run's method keys mean is refused too (check_resume)."""
    config = config_from_args(args)
    with RunWriter(args.store, config.run_id) as writer:
        check_resume(StoreReader(writer.root), config)
        return evaluate_held(writer, config, args.address)


def check_resume(store: StoreReader, config: RunConfig) -> None:
    """Refuse options that would store units beside the run's stored ones under keys meaning something else."""
    changes = config_changes(store.run_configs(config.run_id), config)
    if changes:
        raise ConfigError(f"run {config.run_id!r} was stored with other options, whose units these would join "
                          f"under the same keys: {'; '.join(changes)} (resume with the stored options, or use a "
                          "new --run-id)")


def evaluate_held(writer: RunWriter, config: RunConfig, address: str | None, reference_repeats: int = 0) -> Summary:
    """Evaluate `config` into the run `writer` holds (the nightly evaluates every part of its run under one
    hold); with `reference_repeats`, also time the reference forward pass inside the run's model actors
    before they stop (what the nightly divides by)."""
    manifest = Path(config.manifest)
    rows = itertools.islice(iter_manifest(manifest), config.limit)  # header checked here, rows streamed
    total = min(count_rows(manifest), config.limit or sys.maxsize)
    with sigterm_interrupts():
        connect(address, config.model_actors + config.decode_actors)
        with Evaluation(config, writer) as evaluation:
            summary = evaluation.run(rows, total)
            if reference_repeats:
                reference = evaluation.reference_seconds(reference_repeats)
                summary = dataclasses.replace(summary, reference_seconds=reference)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("evaluate", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
