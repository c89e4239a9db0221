"""The `aosa` command: `aosa <job> ...` runs `python -m aosa.jobs.<job> ...`."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

JOBS = {
    "explain": "one saliency map for one video",
    "evaluate": "every video of a manifest x every method, on Ray, into a Parquet result store",
    "sanity": "cascade randomization of each method's maps (the paper's Fig. 8)",
    "focus": "share of each method's map mass inside the target boxes, and where a max-pooled model's features peak",
    "doctor": "which backends this machine has (TensorRT, DALI, CUDA flow) and why not the others",
    "gpu_check": "on a GPU machine: every GPU path (TensorRT, DALI GPU, CUDA flow, 2-actor evaluate) with timings",
    "benchmark": "time maps against plain forward passes (ratios measured in one run)",
    "precision": "what each backend's precision (tf32, bf16, fp16, compile) does to maps, against fp32",
    "manifest": "turn UCF101 / UCF101-24 / Kinetics annotations into a manifest",
    "query": "read-only SQL (DuckDB) over a result store's runs, metrics, timings and maps",
    "compact": "merge a result store's small Parquet files into a few large ones, atomically (per run or all)",
    "report": "the paper's tables (I, IV-VII) of a run: deletion / insertion, over-all, S-PT, seconds per map",
    "synth": "write the synthetic probe benchmark: moving-target videos with boxes, and their manifest",
    "nightly": "a fixed benchmark preset judged against the last passing night by versioned rules, HTML report",
    "serve": "a read-only results browser over a store: runs, tables, a sortable gallery, synchronized map players",
    "figure": "the paper's figure of a run's maps: frames in columns, methods in rows, a colour bar (PDF or PNG)",
    "train_probe": "train a probe model (--task motion|appearance) on synthetic clips and write its weights",
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in JOBS:
        lines = [f"  {name:<10} {text}" for name, text in JOBS.items()]
        print("usage: aosa <job> [options]   (each job is also `python -m aosa.jobs.<job>`)\n\njobs:\n" + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"aosa: error: unknown job {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    return importlib.import_module(f"aosa.jobs.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
