"""`aosa compact --store DIR [--run-id ID]`: merge a run's (or every run's) small Parquet files into a few large ones.

Atomic (engine.store.compaction): a crash leaves either the old files or the new ones visible, and the next
compact or resume of the run finishes the job. A run that a live writer holds is refused: with --run-id the
job exits 2 at once; over every run it compacts the others, names the held ones and exits 2.

    python -m aosa.jobs.compact --store results --run-id night-42
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from aosa.engine.errors import ConfigError
from aosa.engine.store.compaction import TARGET_ROWS, compact_run
from aosa.jobs.common import open_store, run_guarded


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aosa compact", description="Merge a result store's small Parquet files.")
    parser.add_argument("--store", type=Path, required=True, help="result store directory")
    parser.add_argument("--run-id", help="compact this run only (default: every run)")
    parser.add_argument("--target-rows", type=int, default=TARGET_ROWS, help="rows per merged file at most")
    return parser


def run(args: argparse.Namespace) -> int:
    store = open_store(args.store)
    if args.target_rows < 1:
        raise ConfigError("--target-rows must be at least 1")
    known = store.run_ids()
    if args.run_id is not None and args.run_id not in known:
        raise ConfigError(f"store {store.root} has no run {args.run_id!r}")
    held = 0
    for run_id in [args.run_id] if args.run_id is not None else known:
        try:
            print(compact_run(store.root, run_id, args.target_rows).describe())
        except ConfigError as exc:
            if args.run_id is not None:
                raise
            held += 1
            print(f"aosa compact: skipped: {exc}", file=sys.stderr)
    return 2 if held else 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_guarded("compact", run, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
