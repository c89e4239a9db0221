"""No silent wrong map (issue 22): incremental occlusion runs in-place writes as eager does or refuses the model,
checks the traced module against the logits of what scores the batches on every path (the Ray workers' too), and
scores a few masks per clip both ways, going dense and saying so when they differ."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import re
from pathlib import Path

import pytest
import ray
import torch
from torch import nn

from aosa.engine.models.loading import load_model
from aosa.engine.runtime.explain import inference_fields
from aosa.engine.runtime.video_units import sharded_map
from aosa.engine.runtime.workers import IncrementalCache, ModelWorker, PreparedVideo
from aosa.jobs.explain import main as explain_main
from aosa.kernels.incremental import NotIncremental, incremental_for
from aosa.kernels.incremental import model as incremental_model
from aosa.kernels.methods.aosa import AOSA
from aosa.kernels.occlusion import CHECK_TOLERANCE, CHECKED, Inference, checked_masks
from aosa.schemas.manifest import ManifestRow
from aosa.schemas.method_params import MethodParams
from aosa.schemas.tables import build_table
from tests.test_incremental import TOLERANCE, aosa_tubes, build, case_tubes, clip_of, scores
from tests.videos import moving_square, write_video


class ReluReadTwice(nn.Module):
    """nn.ReLU(inplace=True) on a conv output that an add reads after it (eager: the add reads the ReLU's values)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.mix = nn.Conv3d(6, 6, 3, 1, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        b = self.relu(a)
        return self.head((self.mix(b) + a).mean((2, 3, 4)))


class AddIntoReadLater(nn.Module):
    """`s = a.add_(c)` (traced as a local add) with `a` read after it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 3, 1, 1)
        self.other = nn.Conv3d(3, 6, 3, 1, 1)
        self.mix = nn.Conv3d(6, 6, 3, 1, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, c = self.conv(x), self.other(x)
        s = a.add_(c)
        return self.head((self.mix(s) * a).mean((2, 3, 4)))


class WriteAfterCut(nn.Module):
    """An in-place op on a local output after the first non-local one (the clean rows must be the values before)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 3, 1, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        pooled = y.mean((2, 3, 4))
        y.mul_(3.0)
        return self.head(pooled + y.amax((2, 3, 4)))


class WriteThroughView(nn.Module):
    """An in-place ReLU through a flattened view of a local output, which is read after it: whether the view
    shares memory depends on the layout, so this cannot be modelled."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 3, 1, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        y.flatten(2).relu_()
        return self.head(y.mean((2, 3, 4)))


ALIASING = [ReluReadTwice, AddIntoReadLater, WriteAfterCut]
PARAMS = MethodParams(stride=8, mask=12, top_k=3, batch_size=16)
RIGHT = incremental_model.occluded_input  # the incremental path's input tiles, before any test breaks them


def logits_of(model: nn.Module, clip: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(clip[None])


@pytest.mark.parametrize("model_class", ALIASING)
def test_in_place_writes_give_the_dense_scores(model_class: type[nn.Module]) -> None:
    """Before: the ReLU's drops were off by 1.6e-4, the add's by 1.5e-3, the write after the cut's by 1e-2."""
    model, clip = build(model_class), clip_of(8, 32)
    dense, fast = scores(model, clip, case_tubes(8, 32, 32), "mean")
    assert (dense - fast).abs().max() <= TOLERANCE
    assert incremental_for(model, clip, "on", logits_of(model, clip))[0] is not None


def test_clean_rows_are_the_values_before_a_later_write() -> None:
    model, clip = build(WriteAfterCut), clip_of(8, 32)
    incremental = incremental_for(model, clip, "on", logits_of(model, clip))[0]
    [conv] = [node for node in incremental.local if node.target == "conv"]
    expected = logits_of(model.conv, clip)  # (1, C, T, H, W), never multiplied by 3
    rows = incremental.prefix.tables[conv].clean
    assert torch.allclose(rows, expected[0].permute(1, 2, 3, 0).reshape(-1, 6), atol=1e-6)
    assert torch.equal(clip, clip_of(8, 32))  # the caller's clip is never written into


def test_a_write_through_another_view_is_not_incremental() -> None:
    model, clip = build(WriteThroughView), clip_of(8, 32)
    message = "relu_ writes in place into conv (Conv3d), which mean reads after it through another view"
    assert incremental_for(model, clip, "auto", logits_of(model, clip)) == (None, message)
    with pytest.raises(NotIncremental, match=re.escape(message)):
        incremental_for(model, clip, "on", logits_of(model, clip))
    flow, _ = aosa_tubes(8, 32, PARAMS)
    explainer = AOSA(model, PARAMS)
    explainer.attribute(clip, 1, flow)
    assert explainer.inference == Inference("dense", message)  # auto went dense and says why


class OtherRunner:
    """A wrapper whose `.module` is not what its call runs (a compiled or converted copy would be)."""

    def __init__(self, module: nn.Module, runs: nn.Module) -> None:
        self.module, self.runs = module, runs

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.runs(batch)


def test_a_model_scored_by_something_else_than_its_traced_module_is_refused() -> None:
    """A LoadedModel with a compiled engine or a reduced precision says so (even where the engine computes the
    same); a plain wrapper running another module is caught by its logits; in `auto` both go dense with a note."""
    model, clip = load_model("probe3d", "cpu"), clip_of(16, 112)
    compiled = dataclasses.replace(model, compiled=copy.deepcopy(model.module))
    half = dataclasses.replace(model, precision="bf16")
    runs = copy.deepcopy(model.module)
    with torch.no_grad():
        for parameter in runs.parameters():
            parameter.mul_(1.01)
    other = OtherRunner(model.module, runs)
    refused = [(compiled, "scores batches with a compiled engine or in reduced precision"), (half, "reduced precision"),
               (other, "OtherRunner's traced module does not reproduce the model's logits")]
    for wrapper, message in refused:
        logits = logits_of(wrapper, clip)
        built, note = incremental_for(wrapper, clip, "auto", logits)
        assert built is None and message in note
        with pytest.raises(NotIncremental, match=re.escape(message)) as raised:
            incremental_for(wrapper, clip, "on", logits)
        assert "\n" not in str(raised.value)
    assert incremental_for(model, clip, "on", logits_of(model, clip))[0] is not None


def test_checked_masks_are_the_largest_and_the_median_by_volume() -> None:
    tubes = case_tubes(8, 32, 32)
    volumes = tubes.volumes()
    assert sorted(volumes[checked_masks(tubes)].tolist()) == [sorted(volumes.tolist())[4], float(volumes.max())]


def wrong_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every occluded input tile of the incremental path off by 0.5 (a bug the runtime check must catch)."""
    monkeypatch.setattr(incremental_model, "occluded_input", lambda *args: RIGHT(*args) + 0.5)


def test_the_runtime_check_falls_back_to_dense_on_wrong_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    model, clip = build(ReluReadTwice), clip_of(8, 32)
    flow, tubes = aosa_tubes(8, 32, PARAMS)
    dense = AOSA(model, dataclasses.replace(PARAMS, incremental="off")).attribute(clip, 1, flow)
    checked = AOSA(model, dataclasses.replace(PARAMS, incremental="on"))
    checked.attribute(clip, 1, flow)
    assert checked.inference.path == "incremental" and checked.inference.max_diff <= TOLERANCE
    wrong_patches(monkeypatch)
    explainer = AOSA(model, dataclasses.replace(PARAMS, incremental="on"))
    saliency = explainer.attribute(clip, 1, flow)
    inference = explainer.inference
    assert inference.path == "dense" and inference.mismatch and inference.max_diff > CHECK_TOLERANCE
    assert inference.note.startswith("incremental scores differed from dense by ") and "scored dense" in inference.note
    assert inference.clips == len(tubes)  # scored incrementally first, then every mask again dense
    assert torch.allclose(saliency, dense, atol=1e-6)


@pytest.fixture(scope="module")
def square_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("videos") / "square.mp4", moving_square(20, 96, 128))


def test_meta_json_says_how_the_map_was_checked(square_video: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`aosa explain` on probe3d (incremental on a CPU): the largest difference checked, then a broken incremental
    path recomputed dense with the reason; the metrics row takes the same fields."""
    metas = {}
    for case in ("checked", "broken"):
        if case == "broken":
            wrong_patches(monkeypatch)
        out = tmp_path / case
        assert explain_main([str(square_video), "--model", "probe3d", "--stride", "32", "--out", str(out)]) == 0
        metas[case] = json.loads((out / "meta.json").read_text())
    checked, broken = metas["checked"], metas["broken"]
    assert checked["inference"] == "incremental" and checked["inference_note"] is None
    assert 0 <= checked["incremental_max_diff"] <= TOLERANCE
    assert broken["inference"] == "dense" and broken["incremental_max_diff"] > CHECK_TOLERANCE
    assert broken["inference_note"].startswith("incremental scores differed from dense")
    assert checked["n_forward"] == 9 + CHECKED + 1  # 3 x 3 masks, the checked ones again dense, the clean clip
    row = {"run_id": "r", "video_id": "v", "model": "probe3d", "method": "aosa", "status": "ok", "params": "{}",
           **inference_fields(Inference("dense", broken["inference_note"], broken["incremental_max_diff"]))}
    stored = build_table("metrics", [row]).to_pylist()[0]
    assert stored["incremental_max_diff"] == broken["incremental_max_diff"]
    assert stored["inference_note"] == broken["inference_note"] and stored["inference"] == "dense"


class SwappedWorker(ModelWorker):
    """A model worker (probe3d's, on the CPU) scoring with another module, optionally behind a 'compiled' copy of
    it, or with an incremental path that pastes wrong patches."""

    def use(self, module: nn.Module, compiled: bool = False, broken: bool = False) -> None:
        self.model.module = module.eval()
        self.model.compiled = copy.deepcopy(module) if compiled else None
        self.incremental = IncrementalCache(self.model)
        incremental_model.occluded_input = (lambda *args: RIGHT(*args) + 0.5) if broken else RIGHT


def sharded(actors: list, params: MethodParams, clip: torch.Tensor, flow: torch.Tensor):
    """An AOSA map of `clip` sharded over `actors` as an evaluation scores it (the driver's side included)."""
    clip_ref = ray.put(clip)
    logits = ray.get(actors[0].logits.remote(clip_ref)).value
    row = ManifestRow("v", Path("/videos/v.mp4"), label=1)
    prepared = PreparedVideo(row, None, tuple(clip.shape), {"farneback": flow}, [])
    return asyncio.run(sharded_map(EveryActorAPlace(actors), "aosa", params, AOSA, prepared, clip_ref, logits, 1, flow))


class EveryActorAPlace:
    """The pool's side sharded_map uses, each actor a place of its own (as CPU actors are)."""

    def __init__(self, actors: list) -> None:
        self.models = actors

    @contextlib.contextmanager
    def shard_actors(self):
        yield self.models


@pytest.fixture(scope="module")
def swapped(ray_cluster) -> list:
    actors = [ray.remote(num_cpus=1)(SwappedWorker).remote("probe3d", "cpu") for _ in range(2)]
    yield actors
    for actor in actors:
        ray.kill(actor)


def use(actors: list, module: nn.Module, **options: bool) -> None:
    ray.get([actor.use.remote(module, **options) for actor in actors])


@pytest.mark.parametrize("model_class", [*ALIASING, WriteThroughView])
def test_ray_shards_model_in_place_writes_or_go_dense(swapped: list, model_class: type[nn.Module]) -> None:
    """Each worker builds its incremental model against the clean logits the driver got from a model actor."""
    clip, (flow, _) = clip_of(8, 32), aosa_tubes(8, 32, PARAMS)
    use(swapped, build(model_class))
    dense = sharded(swapped, dataclasses.replace(PARAMS, incremental="off"), clip, flow)
    fast = sharded(swapped, PARAMS, clip, flow)
    assert (fast.value - dense.value).abs().max() <= 1e-3 * dense.value.abs().max()
    if model_class is WriteThroughView:
        assert fast.inference.path == "dense" and "writes in place into conv" in fast.inference.note
    else:
        assert fast.inference.path == "incremental" and fast.inference.max_diff <= TOLERANCE
    assert fast.clips == dense.clips + (CHECKED if fast.inference.path == "incremental" else 0)


def test_ray_workers_refuse_a_compiled_backend(swapped: list) -> None:
    clip, (flow, _) = clip_of(8, 32), aosa_tubes(8, 32, PARAMS)
    use(swapped, build(ReluReadTwice), compiled=True)
    result = sharded(swapped, PARAMS, clip, flow)
    assert result.inference.path == "dense" and "scores batches with a compiled engine" in result.inference.note
    with pytest.raises(ray.exceptions.RayTaskError) as raised:
        sharded(swapped, dataclasses.replace(PARAMS, incremental="on"), clip, flow)
    assert isinstance(raised.value.cause, NotIncremental) and "\n" not in str(raised.value.cause)


def test_ray_check_sends_the_whole_map_dense_when_a_shard_differs(swapped: list) -> None:
    clip, (flow, _) = clip_of(8, 32), aosa_tubes(8, 32, PARAMS)
    use(swapped, build(ReluReadTwice))
    dense = sharded(swapped, dataclasses.replace(PARAMS, incremental="off"), clip, flow)
    use(swapped, build(ReluReadTwice), broken=True)
    result = sharded(swapped, PARAMS, clip, flow)
    assert result.inference.path == "dense" and result.inference.max_diff > CHECK_TOLERANCE
    assert result.inference.note.startswith("incremental scores differed from dense")
    assert (result.value - dense.value).abs().max() <= 1e-6 * dense.value.abs().max()
