"""Handing out model actors: a long call goes to an idle actor whatever the pattern of short calls around it."""

import itertools
from contextlib import ExitStack

from aosa.engine.runtime.pool import LeastBusy


def videos(take, count: int, stack: ExitStack) -> list[str]:
    """Per video a short call (the clean forward, returned at once) then a long one (the map, still running)."""
    maps = []
    for _ in range(count):
        with take():
            pass
        maps.append(stack.enter_context(take()))
    return maps


def test_maps_spread_over_the_actors_where_round_robin_sends_them_all_to_one():
    with ExitStack() as stack:
        assert sorted(videos(LeastBusy(["a", "b"]).take, 4, stack)) == ["a", "a", "b", "b"]
    cycle = itertools.cycle(["a", "b"])
    maps_in_turn = [(next(cycle), next(cycle))[1] for _ in range(4)]  # (clean forward, map) per video
    assert maps_in_turn == ["b"] * 4  # what this replaces: round robin put every map on one actor


def test_idle_actors_are_taken_in_turn_and_a_finished_call_frees_its_actor():
    busy = LeastBusy(["a", "b", "c"])
    taken = []
    for _ in range(4):
        with busy.take() as actor:
            taken.append(actor)
    assert taken == ["a", "b", "c", "a"]
    with busy.take() as first, busy.take() as second:
        assert first != second and busy.in_flight.count(1) == 2
    assert busy.in_flight == [0, 0, 0]
