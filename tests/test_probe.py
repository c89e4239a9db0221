"""The shipped probe models (one per synthetic task): accurate on fresh encoded videos, reproducible training,
weights as recorded, named in the zoo."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from aosa.engine.datasets.synthetic import write_benchmark
from aosa.engine.errors import ModelError
from aosa.engine.models import zoo
from aosa.engine.models.loading import load_model
from aosa.engine.models.video.probe3d import probe3d
from aosa.jobs.train_probe import TASK_CONFIGS, TrainConfig, manifest_accuracy, train

FRESH_SEED = 12345  # never used by training (its clips are salted) nor by its held-out check (1000)
APPEARANCE_SHIPPED = pytest.mark.skipif(
    not zoo.probe_weights("appearance").is_file(),
    reason="probe_appearance.pth not shipped: `python -m aosa.jobs.train_probe --task appearance` has not reached 0.95 yet")
TINY = TrainConfig(train=40, crops=(32,), epochs=1, batch_size=4, frames=8, size=80)  # 10 + 10 steps


def test_probe_classifies_fresh_h264_videos(tmp_path) -> None:
    manifest = write_benchmark(tmp_path, videos=40, seed=FRESH_SEED, codec="libx264")
    loaded = load_model("probe")
    assert loaded.preprocessing == zoo.ZOO["probe3d"].preprocessing
    assert manifest_accuracy(loaded.module, manifest) >= 0.95


@APPEARANCE_SHIPPED
def test_appearance_probe_classifies_fresh_h264_videos(tmp_path) -> None:
    manifest = write_benchmark(tmp_path, videos=40, seed=FRESH_SEED, codec="libx264", task="appearance")
    loaded = load_model("probe:appearance")
    assert loaded.preprocessing.classes == ("checker", "stripes", "ring", "cross")
    assert manifest_accuracy(loaded.module, manifest) >= 0.95


def test_max_pooling_classifies_the_strongest_response_and_unknown_pools_are_refused() -> None:
    model, clip = probe3d(width=4, pool="max").eval(), torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(clip), model.fc(model.features(clip).amax(dim=(2, 3, 4))))
    assert zoo.PROBE_POOLS == {"motion": "avg", "appearance": "max"}
    with pytest.raises(ValueError, match="unknown pool 'sum'"):
        probe3d(pool="sum")


def test_zoo_names_a_probe_per_task_and_probe_is_the_motion_one() -> None:
    assert set(zoo.PROBE_TASKS) == {"motion", "appearance"}
    assert zoo.ZOO["probe:motion"].preprocessing == zoo.ZOO["probe"].preprocessing == zoo.PROBE_PREPROCESSING
    motion, probe = load_model("probe:motion").module.state_dict(), load_model("probe").module.state_dict()
    assert all(torch.equal(motion[key], probe[key]) for key in probe)
    appearance = zoo.ZOO["probe:appearance"].preprocessing
    assert appearance == dataclasses.replace(zoo.PROBE_PREPROCESSING, classes=zoo.PROBE_TASKS["appearance"])


@pytest.mark.parametrize("task", ["motion", pytest.param("appearance", marks=APPEARANCE_SHIPPED)])
def test_shipped_weights_match_their_record(task: str) -> None:
    weights = zoo.probe_weights(task)
    record = json.loads(weights.with_name(f"{weights.stem}.train.json").read_text())
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == record["sha256"]
    assert record["weights"] == weights.name and min(record["accuracy"].values()) >= 0.95
    config = TrainConfig(**record["config"] | {"crops": tuple(record["config"]["crops"])})
    assert config == TASK_CONFIGS[task] and config.width == zoo.PROBE_WIDTHS[task]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["motion", "appearance"])
def test_training_is_reproducible_for_a_seed(task: str) -> None:
    settings = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    tiny = dataclasses.replace(TINY, task=task)
    first, again = train(tiny), train(tiny)
    other = train(dataclasses.replace(tiny, seed=1))
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == settings
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[key], again[key]) for key in first)
    assert not torch.equal(first["fc.weight"], other["fc.weight"])


@pytest.mark.parametrize(("spec", "command"), [("probe", r"python -m aosa\.jobs\.train_probe`"),
                                               ("probe:appearance", r"python -m aosa\.jobs\.train_probe --task appearance`")])
def test_missing_weights_say_how_to_make_them(monkeypatch, tmp_path, spec: str, command: str) -> None:
    monkeypatch.setattr(zoo, "PROBE_WEIGHTS", tmp_path / "probe.pth")
    with pytest.raises(ModelError, match=command):
        load_model(spec)
