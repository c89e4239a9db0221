"""The shipped probe model: accurate on fresh encoded videos, reproducible training, weights as recorded."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from engine.datasets.synthetic import write_benchmark
from engine.errors import ModelError
from engine.models import zoo
from engine.models.loading import load_model
from jobs.train_probe import TrainConfig, manifest_accuracy, train

FRESH_SEED = 12345  # never used by training (its clips are salted) nor by its held-out check (1000)
TINY = TrainConfig(train=40, crops=(32,), epochs=1, batch_size=4, frames=8, size=80)  # 10 + 10 steps


def test_probe_classifies_fresh_h264_videos(tmp_path) -> None:
    manifest = write_benchmark(tmp_path, videos=40, seed=FRESH_SEED, codec="libx264")
    loaded = load_model("probe")
    assert loaded.preprocessing == zoo.ZOO["probe3d"].preprocessing
    assert manifest_accuracy(loaded.module, manifest) >= 0.95


def test_shipped_weights_match_their_record() -> None:
    record = json.loads(zoo.PROBE_WEIGHTS.with_name("probe.train.json").read_text())
    assert hashlib.sha256(zoo.PROBE_WEIGHTS.read_bytes()).hexdigest() == record["sha256"]
    assert record["weights"] == zoo.PROBE_WEIGHTS.name and min(record["accuracy"].values()) >= 0.95
    assert TrainConfig(**record["config"] | {"crops": tuple(record["config"]["crops"])}) == TrainConfig()


@pytest.mark.slow
def test_training_is_reproducible_for_a_seed() -> None:
    settings = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    first, again = train(TINY), train(TINY)
    other = train(dataclasses.replace(TINY, seed=1))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == settings
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["fc.weight"], other["fc.weight"])


def test_missing_weights_say_how_to_make_them(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(zoo, "PROBE_WEIGHTS", tmp_path / "probe.pth")
    with pytest.raises(ModelError, match=r"python -m jobs\.train_probe"):
        load_model("probe")
