"""The nightly's speed reference: sampled while a worker runs, at most once per interval, topped up at the end."""

from __future__ import annotations

from aosa.engine.models.loading import load_model
from aosa.engine.models.timing import ReferenceSampler


def test_reference_samples_are_spaced_and_topped_up():
    sampler = ReferenceSampler(load_model("probe3d"), interval=3600.0)
    sampler.maybe_sample()
    sampler.maybe_sample()  # within the interval: no second sample
    assert len(sampler.samples) == 1
    median = sampler.median(repeats=5)
    assert len(sampler.samples) == 5 and min(sampler.samples) <= median <= max(sampler.samples)
    eager = ReferenceSampler(load_model("probe3d"), interval=0.0)
    for _ in range(3):
        eager.maybe_sample()
    assert len(eager.samples) == 3
