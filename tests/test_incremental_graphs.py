"""Static incremental plans (kernels/incremental/graphs.py): padded to fixed capacities, loaded with each clip's rows
and replayed. On a CPU a replay is the same run done eagerly from the static buffers (PlanGraphs(capture=False));
the CUDA test records and replays real graphs where a GPU is present."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch.utils._python_dispatch import TorchDispatchMode

from aosa.kernels.fills import make_fill
from aosa.kernels.incremental import IncrementalModel
from aosa.kernels.incremental.graphs import PlanGraphs, bucket, fits, grown, layout, owned_tiles, padded, sizes
from aosa.kernels.occlusion import occlusion_scores
from aosa.kernels.scoring import ScoreFunction
from aosa.kernels.space import InputSpace
from aosa.kernels.tubes import TubeSet
from tests.test_incremental import TOLERANCE, LocalZoo, build, case_tubes, clip_of, narrow_slowfast

WAITS = {"_local_scalar_dense", "nonzero", "unique", "_unique2", "unique_dim", "masked_select", "item"}


def shifted(tubes: TubeSet, dy: int, dx: int) -> TubeSet:
    """The same masks with every box moved by (dy, dx) and clipped to the frame (empty boxes stay empty)."""
    boxes = tubes.boxes.clone()
    alive = (boxes[..., 0] < boxes[..., 1]) & (boxes[..., 2] < boxes[..., 3])
    moved = boxes + torch.tensor([dy, dy, dx, dx])
    moved[..., :2] = moved[..., :2].clamp(0, tubes.height)
    moved[..., 2:] = moved[..., 2:].clamp(0, tubes.width)
    return TubeSet(torch.where(alive[..., None], moved, boxes), tubes.groups, tubes.height, tubes.width)


def both_paths(model, clip: torch.Tensor, tubes: TubeSet, graphs: PlanGraphs, fill_kind: str = "mean",
               **options) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense, static-plan) occlusion scores of every mask."""
    fill = make_fill(fill_kind, clip, InputSpace(), samples=2)
    score = ScoreFunction(model, target=1)
    dense = occlusion_scores(score, clip, tubes, fill, batch_size=4)
    fast = IncrementalModel(model, clip, graphs=graphs, **options)
    return dense, occlusion_scores(score, clip, tubes, fill, batch_size=4, incremental=fast)


def test_buckets_hold_what_is_asked_at_most_an_eighth_over() -> None:
    for size in list(range(0, 300)) + [1000, 4097, 123457]:
        held = bucket(size)
        assert size <= held <= max(size, size * 9 / 8)
    assert bucket(bucket(777)) == bucket(777)


@pytest.mark.parametrize("factory", [LocalZoo, lambda: torchvision.models.video.r3d_18(num_classes=7)])
def test_a_padded_plan_gives_each_mask_its_logits(factory) -> None:
    """Spare tiles and a spare mask change no logit of the plan's masks."""
    model, clip = build(factory), clip_of(8, 32)
    incremental = IncrementalModel(model, clip)
    plan = incremental.planner.plan(case_tubes(8, 32, 32), torch.arange(8))
    laid_out = layout(incremental, plan.cut)
    needed = sizes(owned_tiles(plan, incremental, laid_out))
    capacity = grown(needed, None)
    assert fits(needed, capacity) and not fits(capacity, capacity)
    value = torch.zeros(3, 1, 1, 1)
    plain = incremental.eager_logits(plan, value)
    laid = padded(plan, incremental, laid_out, capacity)
    assert sizes(owned_tiles(laid, incremental, laid_out)) == capacity and len(laid.boxes) == plan.count + 1
    assert (incremental.eager_logits(laid, value) - plain).abs().max() <= 1e-5


@pytest.mark.parametrize("fill_kind", ["mean", "conditional"])
def test_one_static_plan_serves_clips_of_the_same_structure(fill_kind: str) -> None:
    """Three clips through one worker's static plans: each clip's scores are the dense ones, the second clip (same
    masks, other pixels) reuses the first one's static plan, and the first clip's own clean rows are untouched."""
    model, graphs = build(LocalZoo), PlanGraphs(capture=False)
    tubes = case_tubes(8, 32, 32)
    first = IncrementalModel(model, clip_of(8, 32, seed=1), graphs=graphs)
    kept = {node: table.rows.clone() for node, table in first.prefix.tables.items()}
    for seed, masks in ((1, tubes), (2, tubes), (3, shifted(tubes, 1, -2))):
        dense, fast = both_paths(model, clip_of(8, 32, seed=seed), masks, graphs, fill_kind)
        assert (dense - fast).abs().max() <= TOLERANCE
        if seed == 2:
            assert graphs.captures == 1
    assert graphs.captures <= 2
    assert all(torch.equal(first.prefix.tables[node].rows, rows) for node, rows in kept.items())


def test_a_plan_that_outgrows_its_capacities_is_made_again_larger() -> None:
    """Small boxes, then boxes twice their size in the same structure: the static plan grows, the scores stay the
    dense ones (dense_fraction 1: no layer goes dense, so both plans have the same cut)."""
    model, graphs = build(torchvision.models.video.r3d_18, num_classes=7), PlanGraphs(capture=False)
    small = TubeSet(torch.tensor([6, 10, 6, 10]).expand(2, 8, 4).clone(), torch.tensor([[0], [1]]), 32, 32)
    small.boxes[1] += 12
    large = TubeSet(small.boxes + torch.tensor([-4, 4, -4, 4]), small.groups, 32, 32)
    capacities = []
    for tubes in (small, large):
        dense, fast = both_paths(model, clip_of(8, 32), tubes, graphs, dense_fraction=1.0)
        assert (dense - fast).abs().max() <= TOLERANCE
        capacities.append(next(iter(graphs.static.values())).capacity)
    assert graphs.captures == 2 and len(graphs.static) == 1
    before, after = capacities
    assert all(new >= old for layer_before, layer_after in zip(before, after)
               for old, new in zip(layer_before, layer_after))
    assert capacities[1] != capacities[0]


def test_slowfast_frame_selection_runs_from_static_buffers() -> None:
    model, graphs = build(narrow_slowfast), PlanGraphs(capture=False)
    tubes = case_tubes(16, 64, 64)
    for seed, masks in ((1, tubes), (2, shifted(tubes, 2, 2))):
        dense, fast = both_paths(model, clip_of(16, 64, seed=seed), masks, graphs)
        assert (dense - fast).abs().max() <= TOLERANCE


class Recorded(TorchDispatchMode):
    """Every aten op a run calls, with the shapes it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        shapes = tuple(tuple(part.shape) for part in (out if isinstance(out, (tuple, list)) else [out])
                       if isinstance(part, torch.Tensor))
        self.calls.append((func.overloadpacket.__name__, shapes))
        return out


def test_a_replay_has_the_same_ops_and_shapes_for_every_clip_and_never_waits() -> None:
    """What a CUDA graph needs, checked on the CPU: two clips with different masks that fit one static plan run the
    same aten ops with the same shapes, and none of them reads a value back to the host (item, nonzero, unique)."""
    model, graphs = build(torchvision.models.video.r3d_18, num_classes=7), PlanGraphs(capture=False)
    tubes = case_tubes(8, 32, 32)
    runs = []
    for seed, masks in ((1, tubes), (2, shifted(tubes, 1, 1))):
        incremental = IncrementalModel(model, clip_of(8, 32, seed=seed), graphs=graphs)
        plan = incremental.planner.plan(masks, torch.arange(len(masks)))
        value = torch.zeros(3, 1, 1, 1)
        incremental.logits(plan, value)  # makes or loads the static plan
        static = next(iter(graphs.static.values()))
        with Recorded() as recorded:
            static.run()
        runs.append(recorded.calls)
    assert graphs.captures == 1, "the shifted masks should fit the first clip's capacities"
    assert runs[0] == runs[1]
    assert {name for name, _ in runs[0]} & WAITS == set()
    assert any(name == "convolution" for name, _ in runs[0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_replays_give_the_dense_scores(fp32_cuda) -> None:
    model = build(torchvision.models.video.r3d_18, num_classes=7).cuda()
    graphs = PlanGraphs()
    tubes = case_tubes(8, 32, 32)
    for seed, masks in ((1, tubes), (2, tubes), (3, shifted(tubes, 1, -1))):
        clip = clip_of(8, 32, seed=seed).cuda()
        gpu_tubes = TubeSet(masks.boxes.cuda(), masks.groups.cuda(), masks.height, masks.width)
        dense, fast = both_paths(model, clip, gpu_tubes, graphs)
        assert (dense - fast).abs().max() <= TOLERANCE
    assert all(static.graph is not None for static in graphs.static.values())
    assert graphs.captures <= 2
