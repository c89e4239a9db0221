"""Contenders for one run's lock, started at once by tests/test_lock.py: `python -m tests.lock_race RESULTS
INDEX COUNT [EVALUATE ARGS...]` waits for RESULTS/go, then holds the run `race` of the store RESULTS/store
(with every step of the lock protocol slowed by random sleeps), or with EVALUATE ARGS runs a real `aosa
evaluate` instead. It leaves INDEX.held or INDEX.refused (the refusal) in RESULTS; a holder keeps the run
until the COUNT - 1 others are refused, or for 60 s."""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aosa.engine.errors import ConfigError
from aosa.engine.store import lock
from aosa.engine.store.writer import RunWriter

STEPS = ("create", "read", "dead")  # every other step of the protocol lies between two calls of these
RUN_ID = "race"


def slowed(step: Callable[..., Any], rng: random.Random, most: float = 0.02) -> Callable[..., Any]:
    """`step`, with a random sleep of up to `most` seconds before and after it: every window made wide."""
    def slow(*args: Any) -> Any:
        time.sleep(rng.uniform(0, most))
        result = step(*args)
        time.sleep(rng.uniform(0, most))
        return result
    return slow


def hold(results: Path, index: int, count: int) -> None:
    """Hold the run until every other contender was refused (or 60 s passed); a refusal is written down."""
    try:
        with RunWriter(results / "store", RUN_ID):
            (results / f"{index}.held").touch()
            deadline = time.monotonic() + 60
            while len(list(results.glob("*.refused"))) < count - 1 and time.monotonic() < deadline:
                time.sleep(0.01)
    except ConfigError as exc:
        (results / f"{index}.refused").write_text(str(exc))


def main(results: Path, index: int, count: int, evaluate: list[str]) -> int:
    if evaluate:
        from aosa.jobs.evaluate import main as evaluate_main  # imported before the start, like the lock
    for name in STEPS:
        setattr(lock, name, slowed(getattr(lock, name), random.Random(index)))
    (results / f"{index}.ready").touch()
    while not (results / "go").exists():
        time.sleep(0.005)
    if not evaluate:
        hold(results, index, count)
        return 0
    return evaluate_main(["--store", str(results / "store"), "--run-id", RUN_ID, *evaluate])


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]))
