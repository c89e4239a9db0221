"""The evaluation scheduler: videos stream through decode actors, their masks are sharded across model
actors, and every finished (video, method) unit is written to the result store once.

At most `max_videos_in_flight` videos are decoded or scored at a time, so memory stays bounded whatever
the manifest's length. A failure of one video or unit becomes a stored error row; the run goes on.
The actors live in `engine.runtime.pool`, one video's work in `engine.runtime.video_units`, and the rows
are written by `engine.runtime.recorder`.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import ray
import torch
from tqdm import tqdm

from aosa.engine.errors import ConfigError
from aosa.engine.runtime.pool import ActorPool
from aosa.engine.runtime.recorder import UnitRecorder
from aosa.engine.runtime.video_units import VideoUnits
from aosa.engine.runtime.whole import clips_hop
from aosa.engine.store.maintenance import discard_unfinished, forget_errors
from aosa.engine.store.reader import StoreReader
from aosa.engine.store.writer import RunWriter
from aosa.kernels.methods import get_method
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.run_config import MethodSpec, RunConfig


@dataclass(frozen=True)
class Summary:
    """Counts of one run: units stored ok, units stored as errors, units skipped as already stored."""

    run_id: str
    ok: int
    failed: int
    skipped: int
    reference_seconds: float | None = None  # one batch-1 forward in the model actors (nightly speed reference)


DRIVER_THREADS = 1  # torch threads of the driver, whose tensor work (tubes, aggregation) is small and many-fold


@contextmanager
def driver_threads(threads: int = DRIVER_THREADS) -> Iterator[None]:
    """The driver's small tensor ops on `threads` torch threads while the run lasts. With a thread per core they
    contended with the actors' processes: on an H200 node (16 cores, 4 model actors) a map's tube overlaps took
    90 ms of driver time instead of 8 and the GPU was busy about half the run; on one thread, 80% of it once the
    actors had started."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class Evaluation:
    """One run over a manifest: schedules each video's units on the actor pool and records them."""

    def __init__(self, config: RunConfig, store: RunWriter) -> None:
        check_methods(config)
        self.config, self.store = config, store
        self.pool = ActorPool(config)
        self.recorder = UnitRecorder(config, store)
        self.device = f'{self.pool.describe["device"]} ({self.pool.describe["backend"]})'
        flow_methods = tuple(sorted({spec.params.flow for spec in config.methods if get_method(spec.name).needs_flow}))
        try:
            hop = clips_hop(config.clips, self.pool.describe["preprocessing"].frames)
        except ConfigError:
            self.pool.close()
            raise
        self.videos = VideoUnits(config, self.pool, self.recorder, self.pool.describe["num_classes"], flow_methods,
                                 hop)

    def __enter__(self) -> Evaluation:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pool.close()

    def run(self, rows: Iterable[ManifestRow], total: int | None = None) -> Summary:
        """Evaluate every (video, method) unit not stored yet, streaming `rows` (the caller holds the run's
        `RunWriter`); the final state is stored whatever happens: `finished`, `failed` or `interrupted`."""
        self.recorder.record_run("running", self.device)
        discard_unfinished(self.store)  # what a crashed run left half-written
        if self.config.retry_errors:
            forget_errors(self.store)
        done = StoreReader(self.store.root).stored_units(self.config.run_id)
        state = "interrupted"
        try:
            with self.recorder.buffered(), driver_threads():  # units stored several per file, off the event loop
                counts = asyncio.run(self._run_all(rows, done, total))
            state = "failed" if counts["error"] else "finished"
        finally:
            self.recorder.record_run(state, self.device)
        return Summary(self.config.run_id, ok=counts["ok"], failed=counts["error"], skipped=counts["skipped"])

    def reference_seconds(self, repeats: int) -> float:
        """The reference forward pass timed in every model actor at once (the contention sharded maps run
        under), the median of their medians."""
        return statistics.median(ray.get([actor.reference_seconds.remote(repeats) for actor in self.pool.models]))

    async def _run_all(self, rows: Iterable[ManifestRow], done: set[tuple[str, str, str]],
                       total: int | None) -> Counter[str]:
        """At most `max_videos_in_flight` videos exist at once: the next row is read when one finishes."""
        counts: Counter[str] = Counter(ok=0, error=0, skipped=0)
        in_flight: set[asyncio.Task] = set()
        with tqdm(total=total, unit="video", desc=f"evaluate {self.config.run_id}", dynamic_ncols=True) as bar:
            for row in rows:
                specs = [spec for spec in self.config.methods if (row.video_id, self.config.model, spec.key) not in done]
                counts["skipped"] += len(self.config.methods) - len(specs)
                if not specs:
                    bar.update(1)
                    continue
                if len(in_flight) >= self.config.max_videos_in_flight:
                    finished, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                    for task in finished:
                        task.result()  # only the store itself failing gets here, and that ends the run
                in_flight.add(asyncio.create_task(self._counted(row, specs, counts, bar)))
            await asyncio.gather(*in_flight)
        return counts

    async def _counted(self, row: ManifestRow, specs: list[MethodSpec], counts: Counter[str], bar: tqdm) -> None:
        for status in await self.videos.run(row, specs):
            counts[status] += 1
        bar.update(1)
        bar.set_postfix(ok=counts["ok"], errors=counts["error"])



def check_methods(config: RunConfig) -> None:
    """Every method of the run exists; an unknown one is a ConfigError before any actor starts."""
    for spec in config.methods:
        try:
            get_method(spec.name)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None


