"""The actors of one evaluation: model actors (with their GPU share) and decode actors, created, described,
handed out (model actors to the least busy, decode actors in turn) and stopped. Ray restarts a crashed actor
(`engine.runtime.actors`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any, Generic, TypeVar

import ray

from aosa.engine.errors import ConfigError
from aosa.engine.runtime.actors import ModelActor, VideoActor
from aosa.schemas.run_config import RunConfig

DECODE_GPU_SHARE = 0.1  # a decode actor with --decode-device cuda shares a GPU with the model actors
ACTOR_START_TIMEOUT = 600  # seconds; generous for a cluster that must first scale up a GPU node
Actor = TypeVar("Actor")


class LeastBusy(Generic[Actor]):
    """Hands out the actor with the fewest calls in flight, ties in turn, among all actors or a subset. Round robin
    would couple actors to a fixed pattern of calls: with a clean forward and one map per video, every map went to
    the same actor."""

    def __init__(self, actors: list[Actor]) -> None:
        self.actors, self.in_flight, self.turn = actors, [0] * len(actors), 0

    @contextmanager
    def take(self, among: Sequence[int] | None = None) -> Iterator[Actor]:
        """An actor (of the indices `among`, default all), counted busy until the `with` block ends (await the call
        inside it)."""
        order = [(self.turn + step) % len(self.actors) for step in range(len(self.actors))]
        index = min((i for i in order if among is None or i in among), key=self.in_flight.__getitem__)
        self.turn, self.in_flight[index] = (index + 1) % len(self.actors), self.in_flight[index] + 1
        try:
            yield self.actors[index]
        finally:
            self.in_flight[index] -= 1


class ActorPool:
    """Model actors and decode actors of a run; `describe` is what the first model actor reports."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.models: list[ray.actor.ActorHandle] = []
        self.preparers: list[ray.actor.ActorHandle] = []
        batch_size = max(max(spec.params.batch_size for spec in config.methods), config.metric_batch_size)
        # SPREAD: on a multi-node cluster the model actors land on different nodes, so one video's shards are
        # scored on several nodes and losing a node loses only its share (Ray restarts those actors elsewhere)
        self.models = [ModelActor.options(scheduling_strategy="SPREAD", **self._model_resources()).remote(
            config.model, config.device, config.backend, batch_size, config.engine_cache)
            for _ in range(config.model_actors)]
        self.describe = self._await_models()
        self.preparers = [VideoActor.options(**self._decode_resources()).remote(
            self.describe["preprocessing"], config.decoder, config.start, config.decode_device)
            for _ in range(config.decode_actors)]
        self._models = LeastBusy(self.models)
        self._places = self._group_by_place()
        self._next_preparer = itertools.cycle(self.preparers)

    def _await_models(self) -> dict[str, Any]:
        """Wait until the first model actor has loaded its model; a cluster without room is a ConfigError."""
        try:
            return ray.get(self.models[0].describe.remote(), timeout=ACTOR_START_TIMEOUT)
        except ray.exceptions.GetTimeoutError:
            self.close()
            raise ConfigError(f"model actors did not start within {ACTOR_START_TIMEOUT} s: the Ray cluster lacks "
                              f"the resources for {self.config.model_actors} of them ({ray.available_resources()} "
                              "free)") from None

    def _model_resources(self) -> dict[str, float]:
        """GPU share of each model actor (the cluster's GPUs split evenly) for `cuda`, or `auto` on a GPU cluster."""
        gpus = ray.cluster_resources().get("GPU", 0)
        device = self.config.device
        if device == "cpu" or (device == "auto" and gpus <= 0):
            return {}
        if gpus <= 0:
            raise ConfigError(f"device {device!r}: the Ray cluster has no GPUs")
        return {"num_gpus": min(1.0, gpus / self.config.model_actors)}

    def _decode_resources(self) -> dict[str, float]:
        """A GPU share for decode actors that decode on the GPU (`--decode-device cuda`)."""
        if self.config.decode_device != "cuda":
            return {}
        if ray.cluster_resources().get("GPU", 0) <= 0:
            self.close()
            raise ConfigError("--decode-device cuda: the Ray cluster has no GPUs")
        return {"num_gpus": DECODE_GPU_SHARE}

    def _group_by_place(self) -> list[list[int]]:
        """Model actors grouped by where their passes run (a GPU, or a CPU actor's own cores)."""
        places: dict[str, list[int]] = {}
        for index, place in enumerate(ray.get([actor.placement.remote() for actor in self.models])):
            places.setdefault(place, []).append(index)
        return list(places.values())

    @contextmanager
    def shard_actors(self) -> Iterator[list[ray.actor.ActorHandle]]:
        """The least busy model actor of each place, busy until the block ends: a map's shards go one to each GPU
        (actors that share one run their calls one after another on it, so splitting a map among them only adds
        per-call work) and one to each CPU actor."""
        with ExitStack() as stack:
            yield [stack.enter_context(self._models.take(place)) for place in self._places]

    def model(self) -> AbstractContextManager[ray.actor.ActorHandle]:
        """The least busy model actor, for a call awaited inside the `with` block."""
        return self._models.take()

    def next_preparer(self) -> ray.actor.ActorHandle:
        return next(self._next_preparer)

    def close(self) -> None:
        """Stop every actor (also after a crash, so a resumed run in the same cluster finds room)."""
        for actor in [*self.models, *self.preparers]:
            ray.kill(actor)
