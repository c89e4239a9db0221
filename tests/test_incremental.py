"""Incremental occlusion (kernels/incremental) against the dense path: same scores, per model family and mask case.

Tolerance: scores are fp32 softmax probabilities. The incremental path convolves channels-last windows while the
dense path convolves whole NCDHW clips, so the same sums are added in another order: logits differ by a few
float32 ulps (observed <= 5e-7 on these models), and a probability moves by at most half its logit's change.
1e-5 per mask leaves a 20x margin over that noise and is far below any score drop a map shows.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from aosa.engine.models.video import hara
from aosa.kernels.fills import Fill, make_fill
from aosa.kernels.incremental import IncrementalModel, NotIncremental, incremental_for
from aosa.kernels.incremental.buffers import BufferPool
from aosa.kernels.incremental.shares import changed_outputs, flop_shares
from aosa.kernels.incremental.geometry import Tiles, unique_rows
from aosa.kernels.incremental.patches import Activation, CleanTable
from aosa.kernels.methods import get_method
from aosa.kernels.methods.aosa import adaptive_tubes
from aosa.kernels.occlusion import occlusion_scores
from aosa.kernels.scoring import ScoreFunction
from aosa.kernels.space import InputSpace
from aosa.kernels.tubes import TubeSet, cuboid_tubes
from aosa.schemas.method_params import MethodParams
from tests.seeding import seeded

TOLERANCE = 1e-5
FILLS = ("mean", "zero", "blur", "conditional")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    """Each device here; CUDA in fp32 (`fp32_cuda`): the contract is fp32, and TF32 rounds inputs to 10 mantissa
    bits, so the dense and the incremental path would each drift from fp32 by about 1e-3."""
    if request.param == "cuda":
        request.getfixturevalue("fp32_cuda")
    return torch.device(request.param)


def settled(model: nn.Module, seed: int) -> nn.Module:
    """`model` in eval mode with batch-norm statistics and affine terms drawn from `seed`, so no BN is an identity."""
    with seeded(seed):
        for module in model.modules():
            if isinstance(module, nn.BatchNorm3d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.data.uniform_(0.5, 1.5)
                module.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def build(factory, seed: int = 0, **kwargs) -> nn.Module:
    with seeded(seed):
        model = factory(**kwargs)
    return settled(model, seed)


class LocalZoo(nn.Module):
    """Every local op kind: strided, dilated, grouped and factorised convs, BN, activations, max pool with padding
    and ceil_mode, average pool counting its padding, scalar ops, residual add, channel concat; then a mean."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 8, (3, 5, 5), (1, 2, 2), (1, 2, 2))
        self.bn = nn.BatchNorm3d(8)
        self.pool = nn.MaxPool3d(3, 2, 1, ceil_mode=True)
        self.dilated = nn.Conv3d(8, 8, 3, 1, 2, dilation=2, groups=2)
        self.spatial = nn.Conv3d(8, 4, (1, 3, 3), 1, (0, 1, 1))
        self.average = nn.AvgPool3d(3, 1, 1)
        self.temporal = nn.Conv3d(12, 8, (3, 1, 1), (2, 1, 1), (1, 0, 0))
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(F.relu(self.bn(self.stem(x))))
        branch = torch.sigmoid(self.dilated(x)) * 2.0
        y = torch.cat([branch + x, self.average(self.spatial(x))], dim=1)
        return self.head(self.temporal(y).relu().mean((2, 3, 4)))


def case_tubes(frames: int, height: int, width: int) -> TubeSet:
    """Masks of four tubes each: far-apart corners (borders), a one-pixel tube with dead partners, whole frames,
    all dead, a cuboid in half the frames, a moving tube overlapping a partner, and two ordinary boxes."""
    t = frames
    still = lambda y0, y1, x0, x1: torch.tensor([y0, y1, x0, x1]).expand(t, 4)  # noqa: E731
    half = torch.where(torch.arange(t)[:, None] < t // 2, torch.tensor([4, 14, 6, 16]), 0)
    shift = torch.arange(t)
    moving = torch.stack([shift + 3, shift + 13, 2 * shift, 2 * shift + 10], 1).clamp(0, min(height, width))
    tubes = [still(0, 6, 0, 7), still(height - 5, height, width - 6, width), still(0, 4, width - 4, width),
             still(height - 3, height, 0, 9), still(7, 8, 9, 10), torch.zeros(t, 4, dtype=torch.long),
             still(0, height, 0, width), half, moving, still(5, 15, 5, 15), still(10, 20, 12, 22)]
    groups = torch.tensor([[0, 1, 2, 3], [4, 5, 5, 5], [6, 5, 5, 5], [5, 5, 5, 5], [7, 5, 5, 5], [8, 9, 5, 5],
                           [9, 10, 0, 1], [10, 4, 2, 7]])
    return TubeSet(torch.stack(tubes), groups, height, width)


def scores(model: nn.Module, clip: torch.Tensor, tubes: TubeSet, fill_kind: str, batch_size: int = 4,
           device: torch.device = torch.device("cpu"), **options: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(dense, incremental) occlusion scores of every mask, computed on `device`, returned on the CPU."""
    model, clip = model.to(device), clip.to(device)
    tubes = TubeSet(tubes.boxes.to(device), tubes.groups.to(device), tubes.height, tubes.width)
    fill = make_fill(fill_kind, clip, InputSpace(), samples=2)
    score = ScoreFunction(model, target=1)
    dense = occlusion_scores(score, clip, tubes, fill, batch_size=batch_size)
    fast = IncrementalModel(model, clip, **options)
    return dense.cpu(), occlusion_scores(score, clip, tubes, fill, batch_size=batch_size, incremental=fast).cpu()


def clip_of(frames: int, size: int, seed: int = 3) -> torch.Tensor:
    with seeded(seed):
        return torch.randn(3, frames, size, size)


@pytest.mark.parametrize("fill_kind", FILLS)
@pytest.mark.parametrize("dense_fraction", [1.0, 0.55, 0.05])
def test_every_local_op_every_case_and_fill(fill_kind: str, dense_fraction: float, device: torch.device) -> None:
    """dense_fraction 1 never goes dense, 0.05 goes dense right after the first layer."""
    clip = clip_of(8, 32)
    dense, fast = scores(build(LocalZoo), clip, case_tubes(8, 32, 32), fill_kind, device=device,
                         dense_fraction=dense_fraction)
    assert (dense - fast).abs().max() <= TOLERANCE
    assert (dense[3] - ScoreFunction(build(LocalZoo), 1)(clip[None])[0]).abs() <= TOLERANCE  # all-dead mask: clean


class SharedReaders(nn.Module):
    """Patches with more than one reader, which nothing may write into: a conv read by its BN and by a residual
    (no BN folding there), an eval dropout that passes its input on unchanged (an alias) into a ReLU that may not
    write into it, and a residual add whose first input is still read after it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 6, 3, 1, 1)
        self.bn = nn.BatchNorm3d(6)
        self.drop = nn.Dropout3d(0.3)
        self.relu = nn.ReLU()
        self.mix = nn.Conv3d(6, 6, 3, 1, 1)
        self.head = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)
        b = self.bn(a) + a
        c = self.relu(self.drop(b))
        d = b + c
        e = self.mix(d) + d
        return self.head((e * d).mean((2, 3, 4)))


@pytest.mark.parametrize("fill_kind", ["mean", "conditional"])
def test_patches_read_twice_are_never_written_into(fill_kind: str) -> None:
    clip = clip_of(8, 32)
    dense, fast = scores(build(SharedReaders), clip, case_tubes(8, 32, 32), fill_kind)
    assert (dense - fast).abs().max() <= TOLERANCE


def test_eval_batch_norm_runs_inside_the_conv_it_alone_reads() -> None:
    """LocalZoo's stem conv is read by its BN only: the BN is folded in (it passes patches through) and the conv's
    patches are the BN's values; SharedReaders' conv has a second reader, so its BN stays a BN."""
    zoo, shared = build(LocalZoo), build(SharedReaders)
    clip = clip_of(8, 32)
    folded = IncrementalModel(zoo, clip).prefix.ops
    kept = IncrementalModel(shared, clip).prefix.ops
    by_target = lambda ops: {node.target: op for node, op in ops.items()}  # noqa: E731
    with seeded(1):
        patch, features = torch.randn(2, 3, 3, 9, 9), torch.randn(2, 6, 3, 5, 5)
    assert by_target(folded)["bn"].run(patch) is patch
    with torch.no_grad():
        stem = by_target(folded)["stem"].run(patch)
        assert torch.allclose(stem, zoo.bn(F.conv3d(patch, zoo.stem.weight, zoo.stem.bias, (1, 2, 2))), atol=1e-5)
        assert torch.allclose(by_target(kept)["bn"].run(features), shared.bn(features))
        assert not torch.allclose(shared.bn(features), features, atol=1e-2)


def test_the_pool_lends_a_buffer_again_only_once_nothing_holds_it() -> None:
    pool, cpu = BufferPool(), torch.device("cpu")
    memory = lambda tensor: tensor.untyped_storage().data_ptr()  # noqa: E731
    first = pool.take((4, 8), torch.float32, cpu)
    lent, view = memory(first), first.permute(1, 0)[2:]
    del first
    second = pool.take((4, 8), torch.float32, cpu)
    assert memory(second) != lent  # a view of the first is alive: a new buffer
    del view
    third = pool.take((2, 8), torch.float32, cpu)
    assert memory(third) == lent and pool.nbytes == 2 * 32 * 4  # the idle first buffer, lent again
    del second, third
    assert pool.take((64,), torch.float32, cpu).numel() == 64
    assert pool.nbytes == 64 * 4  # idle buffers too small for a request are let go


def test_a_lookup_reads_the_clean_rows_the_tiles_and_the_pad_where_a_dense_overlay_has_them() -> None:
    """Rows laid out cell by cell on a grid whose last cells are shifted (extents 3, 6, 7 in cells of 2x4x4): the
    value a lookup finds at every position, inside and around the activation, equals a padded dense activation with
    each mask's tiles pasted on it, where a tile of a shifted cell overlaps the cell before it, that cell's value
    (clean here: the planner places a tile wherever a mask changes a cell)."""
    shape, size, channels = (3, 6, 7), (2, 4, 4), 2
    clean = torch.randn(math.prod(shape), channels)
    table = CleanTable(clean, shape, size)
    assert torch.equal(table.clean, clean)
    # mask 0: a tile on the shifted last cell of every axis and one on the cell before it in x; mask 1: none
    index = torch.tensor([[0, 1, 2, 3], [0, 1, 2, 0]])
    values = torch.randn(2, channels, *size)
    activation = Activation(table, Tiles(index, size), values, 2, BufferPool())
    expected = clean.T.reshape(channels, *shape).repeat(2, 1, 1, 1, 1)
    for (mask, *origin), patch in zip(index.tolist(), values):
        owned = [-(-start // step) * step for start, step in zip(origin, size)]  # a shifted cell owns its tail
        expected[(mask, slice(None), *(slice(own, start + step) for own, start, step in zip(owned, origin, size)))] = (
            patch[(slice(None), *(slice(own - start, None) for own, start in zip(owned, origin)))])
    padded = F.pad(expected, (1, 1, 1, 1, 1, 1), value=float("-inf"))
    axes = [torch.arange(-1, extent + 1, dtype=torch.int32) for extent in shape]
    rows = activation.rows_at(torch.arange(2, dtype=torch.int32).view(-1, 1, 1, 1), axes[0].view(1, -1, 1, 1),
                              axes[1].view(1, 1, -1, 1), axes[2].view(1, 1, 1, -1), table.pad_base(-torch.inf))
    assert torch.equal(activation.gather(rows).permute(0, 4, 1, 2, 3), padded)


def test_windows_gathered_in_chunks_give_the_same_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    """A window budget far below one layer's windows: window layers run chunk by chunk, scores unchanged."""
    gathers = []
    windows = Activation.windows
    monkeypatch.setattr(Activation, "windows", lambda self, *args: gathers.append(1) or windows(self, *args))
    clip, tubes = clip_of(8, 32), case_tubes(8, 32, 32)
    counts = {}
    for budget in (2 ** 26, 8192):
        gathers.clear()
        dense, fast = scores(build(LocalZoo), clip, tubes, "conditional", window_bytes=budget)
        assert (dense - fast).abs().max() <= TOLERANCE
        counts[budget] = len(gathers)
    assert counts[8192] > 2 * counts[2 ** 26]


def test_a_batch_with_nothing_occluded_gives_the_clean_logits() -> None:
    """Dead tubes only: no tile at any layer (empty convolutions), the clean logits for every mask."""
    model, clip = build(torchvision.models.video.r3d_18, num_classes=7), clip_of(8, 32)
    incremental = IncrementalModel(model, clip)
    plan = incremental.planner.plan(case_tubes(8, 32, 32), torch.tensor([3, 3]))
    logits = incremental.logits(plan, torch.zeros(3, 1, 1, 1))
    assert torch.allclose(logits, incremental.clean_logits.expand(2, -1), atol=1e-6)


@pytest.mark.parametrize(("name", "fill_kind"), [("r3d_18", "conditional"), ("mc3_18", "blur"),
                                                  ("r2plus1d_18", "zero")])
def test_torchvision_video_resnets(name: str, fill_kind: str, device: torch.device) -> None:
    model = build(getattr(torchvision.models.video, name), num_classes=7)
    dense, fast = scores(model, clip_of(8, 32), case_tubes(8, 32, 32), fill_kind, device=device)
    assert (dense - fast).abs().max() <= TOLERANCE


def test_osa_cuboids_on_r3d18(device: torch.device) -> None:
    """Cuboids present in half the frames, single-tube masks."""
    tubes = cuboid_tubes(8, 32, 32, (4, 8, 8), (4, 12, 12))
    dense, fast = scores(build(torchvision.models.video.r3d_18, num_classes=7), clip_of(8, 32), tubes, "mean",
                         batch_size=6, device=device)
    assert (dense - fast).abs().max() <= TOLERANCE


def aosa_tubes(frames: int, size: int, params: MethodParams) -> tuple[torch.Tensor, TubeSet]:
    """A flow where the left half of the frame moves right by 1 px a frame and the rest stands still."""
    flow = torch.zeros(frames - 1, size, size, 2)
    flow[:, :, : size // 2, 0] = 1.0
    return flow, adaptive_tubes(flow, params)


@pytest.mark.slow
def test_aosa_masks_on_r3d18_at_64px() -> None:
    params = MethodParams(stride=8, mask=16, top_k=3)
    _, tubes = aosa_tubes(8, 64, params)
    dense, fast = scores(build(torchvision.models.video.r3d_18, num_classes=7), clip_of(8, 64), tubes, "mean",
                         batch_size=16)
    assert (dense - fast).abs().max() <= TOLERANCE


@pytest.mark.parametrize("factorized", [False, True])
def test_hara_resnets_one_block_per_stage(factorized: bool) -> None:
    """Hara's R3D / R(2+1)D bottlenecks (7x7x7 stem, max pool, downsample shortcuts), one block per stage."""
    model = build(hara.HaraResNet, blocks=(1, 1, 1, 1), num_classes=5, factorized=factorized)
    dense, fast = scores(model, clip_of(8, 32), case_tubes(8, 32, 32), "blur")
    assert (dense - fast).abs().max() <= TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", ["hara_r3d50", "hara_r2plus1d50"])
def test_hara_resnet50s(name: str) -> None:
    model = build(getattr(hara, name), num_classes=5)
    dense, fast = scores(model, clip_of(8, 32), case_tubes(8, 32, 32), "mean")
    assert (dense - fast).abs().max() <= TOLERANCE


@pytest.mark.slow
def test_x3d_prefix_ends_at_the_first_squeeze_excitation() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        x3d = pytest.importorskip("pytorchvideo.models.x3d")
    model = build(x3d.create_x3d, input_clip_length=4, input_crop_size=64, model_num_class=5)
    clip = clip_of(4, 64)
    assert 0 < IncrementalModel(model, clip).prefix_fraction < 0.5
    dense, fast = scores(model, clip, case_tubes(4, 64, 64), "mean")
    assert (dense - fast).abs().max() <= TOLERANCE


def narrow_slowfast() -> nn.Module:
    """PyTorchVideo's SlowFast (R18 pathways, 16 and 2 stem channels) on one 16-frame 64 px clip."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slowfast = pytest.importorskip("pytorchvideo.models.slowfast")
    from aosa.engine.models.video.slowfast_x3d import SlowFastClip
    net = slowfast.create_slowfast(model_depth=18, model_num_class=5, stem_dim_outs=(16, 2),
                                   head_pool_kernel_sizes=((4, 2, 2), (16, 2, 2)))
    return SlowFastClip(net.blocks)


@pytest.mark.parametrize("fill_kind", ["mean", "conditional"])
def test_slowfast_pathways_and_their_fusions_are_one_incremental_prefix(fill_kind: str) -> None:
    """The slow pathway's frame selection, both pathways and the fast-to-slow fusions are local: the prefix ends in
    the head, and the scores are the dense ones."""
    model, clip = build(narrow_slowfast), clip_of(16, 64)
    incremental = IncrementalModel(model, clip)
    assert [incremental.frames[node].tolist() for node in incremental.frames] == [[0, 5, 10, 15]]
    assert incremental.prefix_fraction > 0.99
    dense, fast = scores(model, clip, case_tubes(16, 64, 64), fill_kind)
    assert (dense - fast).abs().max() <= TOLERANCE


class Doubled(nn.Module):
    """Claims to keep every other frame, and doubles them too."""

    def frame_index(self, frames: int) -> torch.Tensor:
        return torch.arange(0, frames, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * x[:, :, ::2]


def test_a_frame_selection_that_does_more_ends_the_prefix() -> None:
    model = nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), Doubled(), nn.Conv3d(4, 4, 3), nn.Flatten(),
                          nn.LazyLinear(2))
    clip = clip_of(8, 16)
    model(clip[None])
    incremental = IncrementalModel(model.eval(), clip)
    assert len(incremental.local) == 2 and not incremental.frames and incremental.prefix.stop.startswith("1 (Doubled)")


class AttentionAfterEmbedding(nn.Module):
    """An MViT-like model: a conv patch embedding (local), then attention and an MLP over tokens (not local)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Conv3d(3, 16, (2, 8, 8), (2, 8, 8))
        self.attention = nn.MultiheadAttention(16, 2, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(16, 512), nn.GELU(), nn.Linear(512, 16))
        self.head = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x).flatten(2).transpose(1, 2)
        tokens = self.attention(tokens, tokens, tokens)[0]
        return self.head(self.mlp(tokens).mean(1))


class AttentionFirst(AttentionAfterEmbedding):
    """Attention straight on pixels: nothing local to reuse."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2).repeat(1, 1, 6)[..., :16]
        return self.head(self.attention(tokens, tokens, tokens)[0].mean(1))


def chosen(model: nn.Module, clip: torch.Tensor, mode: str) -> tuple[IncrementalModel | None, str | None]:
    """incremental_for with the model's own logits of the clip."""
    with torch.no_grad():
        return incremental_for(model, clip, mode, model(clip[None]))


def test_attention_models_go_dense_in_auto_and_stay_exact_or_refuse_in_on() -> None:
    clip = clip_of(4, 32)
    embedded = build(AttentionAfterEmbedding)
    built, note = chosen(embedded, clip, "auto")  # the embedding is a small share of the work
    assert built is None and note.startswith("the local prefix holds 0.")
    dense, fast = scores(embedded, clip, case_tubes(4, 32, 32), "mean")
    assert (dense - fast).abs().max() <= TOLERANCE
    first = build(AttentionFirst)
    assert chosen(first, clip, "auto") == (None, "AttentionFirst starts with flatten, which is not local")
    with pytest.raises(NotIncremental, match=r"^AttentionFirst starts with flatten, which is not local$"):
        chosen(first, clip, "on")


def test_auto_keeps_gpus_dense_and_cpus_incremental() -> None:
    """`auto` on a clip off the CPU is dense without tracing (a meta tensor stands for any other device)."""
    model = build(torchvision.models.video.r3d_18, num_classes=7)
    assert chosen(model, clip_of(4, 32), "auto")[0] is not None
    assert incremental_for(model, torch.empty(3, 4, 32, 32, device="meta"), "auto", torch.zeros(1, 7)) == (None, None)


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y.mean((2, 3, 4)) if y.sum() > 0 else -y.mean((2, 3, 4))


class Doubling:
    """A wrapper whose call does more than its `.module`."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.module(2 * batch)


def test_untraceable_hooked_or_wrapped_models_refuse_in_one_line() -> None:
    clip = clip_of(4, 16)
    hooked = build(LocalZoo)
    hooked.stem.register_forward_pre_hook(lambda module, args: args)
    wrapped = Doubling(build(LocalZoo))
    cases = {Branchy(): "cannot be traced by torch.fx", hooked: "has forward hooks on stem",
             wrapped: "does not reproduce the model's logits"}
    for model, message in cases.items():
        built, note = chosen(model, clip, "auto")
        assert built is None and message in note
        with pytest.raises(NotIncremental, match=message) as raised:
            chosen(model, clip, "on")
        assert "\n" not in str(raised.value)
    assert chosen(build(LocalZoo), clip, "off") == (None, None)
    with pytest.raises(ValueError, match="unknown incremental mode"):
        chosen(build(LocalZoo), clip, "sometimes")


def test_far_apart_tubes_keep_their_own_tiles() -> None:
    """Four corner tubes of one mask are 4 + 4 + 1 + 3 cells of 4 x 4 px per pair of frames, not one frame-wide
    box."""
    model = build(torchvision.models.video.r3d_18, num_classes=7)
    incremental = IncrementalModel(model, clip_of(8, 32))
    plan = incremental.planner.plan(case_tubes(8, 32, 32), torch.tensor([0]))
    first = plan.tiles[incremental.local[0]]
    assert first.index.shape[0] == 12 * 4 and first.size == (2, 4, 4)


class Reaches(nn.Module):
    """Branches of different receptive fields (strided, dilated, factorised, average pooled) concatenated and
    added, with smooth activations so that every input in a receptive field has a non-zero gradient."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv3d(3, 4, (3, 5, 5), (1, 2, 2), (1, 2, 2))
        self.dilated = nn.Conv3d(4, 4, 3, 1, 2, dilation=2)
        self.spatial = nn.Conv3d(4, 4, (1, 3, 3), 1, (0, 1, 1))
        self.average = nn.AvgPool3d(3, 1, 1)
        self.temporal = nn.Conv3d(8, 4, (3, 1, 1), (2, 1, 1), (1, 0, 0))
        self.down = nn.Conv3d(4, 4, 1, (2, 1, 1))
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.stem(x))
        y = torch.cat([torch.sigmoid(self.dilated(x)), self.average(self.spatial(x))], dim=1)
        return self.head((self.temporal(y) + self.down(x)).mean((2, 3, 4)))


def test_reach_is_the_receptive_field() -> None:
    """Each local node's reach is exactly the input region its central output's gradient touches (float64, random
    weights: no gradient inside the field cancels)."""
    model = build(Reaches).double()
    clip = clip_of(16, 48).double()
    incremental = IncrementalModel(model, clip)
    graph_module = torch.fx.GraphModule(model, incremental.prefix.nodes[0].graph)
    for node in incremental.local[1:]:
        values = {}
        interpreter = torch.fx.Interpreter(graph_module)
        original = interpreter.run_node

        def keep(n: torch.fx.Node, original=original) -> object:
            values[n] = original(n)
            return values[n]
        interpreter.run_node = keep
        leaf = clip[None].clone().requires_grad_(True)
        interpreter.run(leaf)
        out = values[node]
        centre = [size // 2 for size in out.shape[2:]]
        out[0, :, centre[0], centre[1], centre[2]].sum().backward()
        support = leaf.grad[0].abs().sum(0).nonzero()
        reach = incremental.planner.reach[node]
        low = [c * s - lo for c, s, lo in zip(centre, reach.scale, reach.low)]
        high = [c * s + hi for c, s, hi in zip(centre, reach.scale, reach.high)]
        assert support.amin(0).tolist() == low and support.amax(0).tolist() == high, node


@pytest.mark.parametrize("scale", [1, 1 << 40])  # packed into one int64, and too wide to pack
def test_unique_rows_is_torch_unique_over_rows(scale: int) -> None:
    with seeded(4):
        rows = torch.randint(-1, 5, (500, 5)) * torch.tensor([1, 1, 1, 1, scale])
    expected, inverse = torch.unique(rows, dim=0, return_inverse=True)
    values, slot = unique_rows(rows)
    assert len(values) == len(expected)
    assert torch.equal(inverse[:, None] == inverse[None], slot[:, None] == slot[None])  # the same partition


def test_masks_that_meet_a_tile_with_the_same_tubes_share_it() -> None:
    """A tube in three masks whose other tubes are far away is computed once near it; a partner close enough to
    reach its tiles' fields stops the sharing (exactness would catch a wrong share: the partner's fill is far
    from the clip)."""
    frames, size = 8, 48
    still = lambda y0, x0: torch.tensor([y0, y0 + 6, x0, x0 + 6]).expand(frames, 4)  # noqa: E731
    boxes = torch.stack([still(2, 2), still(40, 40), still(2, 40), still(2, 10)])  # A, far B, far C, near D
    groups = torch.tensor([[0, 0], [0, 1], [0, 2], [1, 2], [0, 3]])
    tubes = TubeSet(boxes, groups, size, size)
    model, clip = build(Reaches), clip_of(frames, size)
    incremental = IncrementalModel(model, clip, dense_fraction=1.0)
    plan = incremental.planner.plan(tubes, torch.arange(len(tubes)))
    stem = plan.tiles[incremental.local[1]]
    assert stem.area < len(stem.index) * math.prod(stem.size)  # shared: computed once
    near_a = (stem.index[:, 2] < 8) & (stem.index[:, 3] < 8)
    slots = {int(mask): set(stem.slot[near_a & (stem.index[:, 0] == mask)].tolist()) for mask in range(5)}
    assert slots[0] == slots[1] == slots[2] != slots[4]  # D meets the stem fields of A's tiles: mask 4 is its own
    dense, fast = scores(model, clip, tubes, "zero", batch_size=2, dense_fraction=1.0)
    assert (dense - fast).abs().max() <= TOLERANCE


def test_plans_split_to_fit_their_patch_memory() -> None:
    """A budget below one plan's patches splits the masks into plans that fit, in order, with the same scores."""
    model, clip, tubes = build(LocalZoo), clip_of(8, 32), case_tubes(8, 32, 32)
    index = torch.arange(len(tubes))
    whole = IncrementalModel(model, clip)
    [(masks, plan)] = list(whole.plans(tubes, index))
    assert torch.equal(masks, index)
    tight = IncrementalModel(model, clip, plan_bytes=plan.patch_bytes // 3)
    parts = list(tight.plans(tubes, index))
    assert len(parts) >= 3 and torch.equal(torch.cat([masks for masks, _ in parts]), index)
    assert all(part.patch_bytes <= tight.planner.plan_bytes for masks, part in parts if len(masks) > 1)
    fill = make_fill("zero", clip, InputSpace())
    score = ScoreFunction(model, target=1)
    one, split = (occlusion_scores(score, clip, tubes, fill, incremental=fast) for fast in (whole, tight))
    assert (one - split).abs().max() <= 1e-6


def test_aosa_maps_agree_incremental_and_dense(device: torch.device) -> None:
    """The method-level path (MethodParams.incremental); OSA differs from AOSA only in its tubes."""
    params = MethodParams(stride=8, mask=12, top_k=3, batch_size=16, fill="conditional", samples=2)
    flow, tubes = aosa_tubes(8, 32, params)
    model = build(torchvision.models.video.r3d_18, num_classes=7).to(device)
    clip, flow = clip_of(8, 32).to(device), flow.to(device)
    maps = {}
    for mode in ("on", "off"):
        explainer = get_method("aosa")(model, dataclasses.replace(params, incremental=mode))
        maps[mode] = explainer.attribute(clip, 2, flow)
        assert explainer.inference.path == {"on": "incremental", "off": "dense"}[mode]
        assert explainer.inference.clips == (len(tubes) * 2 if mode == "on" else 0)  # masks x fill draws
        assert (explainer.inference.max_diff is not None) == (mode == "on")  # checked on some masks
    assert (maps["on"] - maps["off"]).abs().max() <= 1e-3 * maps["off"].abs().max()


def test_dense_path_writes_every_draw_into_one_buffer() -> None:
    """The dense path builds each occluded batch in the same buffer: no clip-sized tensor per draw or batch."""
    clip = clip_of(4, 16)
    model = build(LocalZoo)
    seen = []

    def score(batch: torch.Tensor) -> torch.Tensor:
        seen.append(batch.data_ptr())
        return model(batch)[:, 0]
    fill = make_fill("conditional", clip, InputSpace(), samples=3)
    occlusion_scores(score, clip, case_tubes(4, 16, 16), fill, batch_size=3)
    assert len(seen) == 3 * 3 and len(set(seen)) == 1


class Checked:
    """A score function that checks each batch it gets against torch.where(mask, fill, clip) and its layout
    against the one it asks for (`batch_format`, as a LoadedModel does), then scores it."""

    def __init__(self, clip: torch.Tensor, tubes: TubeSet, fill: Fill, chunks: tuple[torch.Tensor, ...],
                 batch_format: torch.memory_format, writes_input: bool) -> None:
        self.clip, self.tubes, self.fill, self.chunks = clip, tubes, fill, chunks
        self.batch_format, self.writes_input = batch_format, writes_input
        self.mismatches: list[int] = []

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        call = len(self.mismatches)
        masks = self.tubes.masks(self.chunks[call // 2], self.clip.device).unsqueeze(1)
        expected = torch.where(masks, self.fill.draws[call % 2], self.clip)
        assert batch.is_contiguous(memory_format=self.batch_format)
        self.mismatches.append(int((batch != expected).sum()))
        if self.writes_input:
            batch.mul_(-1)
        return batch.flatten(1).sum(1)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last_3d])
@pytest.mark.parametrize("writes_input", [False, True])
def test_each_occluded_batch_is_the_clip_with_its_masks_filled(device: torch.device, writes_input: bool,
                                                               layout: torch.memory_format) -> None:
    """Every batch written into the reused buffer (each draw, a short last one, and after a model that writes
    into its input) equals torch.where(mask, fill, clip), in the layout the model asks for."""
    clip = clip_of(4, 16).to(device)
    tubes = case_tubes(4, 16, 16)
    fill = make_fill("conditional", clip, InputSpace(), samples=2)
    chunks = torch.arange(len(tubes)).split(3)  # 3, 3 and a short last batch of 2, each scored with both draws
    score = Checked(clip, tubes, fill, chunks, layout, writes_input)
    occlusion_scores(score, clip, tubes, fill, batch_size=3)
    assert score.mismatches == [0] * 2 * len(chunks)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["on", "off"])
def test_cuda_map_equals_the_cpu_map(mode: str, fp32_cuda: None) -> None:
    """Same seed, same conditional draws (drawn on the CPU), same map on either device, fp32 both."""
    params = MethodParams(stride=8, mask=12, top_k=3, batch_size=16, fill="conditional", samples=2, incremental=mode)
    flow, _ = aosa_tubes(8, 32, params)
    model, clip = build(torchvision.models.video.r3d_18, num_classes=7), clip_of(8, 32)
    cpu = get_method("aosa")(model, params).attribute(clip, 2, flow)
    cuda = get_method("aosa")(model.cuda(), params).attribute(clip.cuda(), 2, flow.cuda()).cpu()
    assert (cuda - cpu).abs().max() <= 1e-3 * cpu.abs().max()


def test_the_counted_changed_outputs_are_where_a_mask_changes_activations() -> None:
    """Through convs (strided, dilated) and an average pool, the counted changed map is exactly where the
    occluded clip's activations differ from the clean ones; unshared, the plan's tiles cover at least that."""
    with seeded(0):
        local = nn.Sequential(nn.Conv3d(3, 4, (3, 5, 5), (1, 2, 2), (1, 2, 2)), nn.Conv3d(4, 4, 3, 1, 2, dilation=2),
                              nn.AvgPool3d(3, 1, 1), nn.Conv3d(4, 4, (3, 1, 1), (2, 1, 1), (1, 0, 0)))
        model = nn.Sequential(local, nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    clip, tubes = clip_of(8, 32), case_tubes(8, 32, 32)
    incremental = IncrementalModel(model, clip)
    index = torch.arange(len(tubes))
    changed = changed_outputs(incremental, tubes, index)[incremental.local[-1]][:, 0]
    masks, differs = tubes.masks(index).unsqueeze(1), False
    for seed in (1, 2):  # two far-off random fills: a change cancelling by chance in both is out of reach
        with seeded(seed), torch.no_grad():
            occluded = torch.where(masks, 100 * torch.randn(3, 8, 32, 32), clip)
            differs = differs | ((local(occluded) - local(clip[None])).abs() > 1e-3).any(1)  # rounding is ~1e-6
    assert torch.equal(changed.bool(), differs)
    unshared = IncrementalModel(model, clip, plan_bytes=1)  # one mask a plan
    shares = flop_shares(unshared, tubes, batch_size=3)
    assert 0 < shares.changed <= shares.planned <= 1
    assert flop_shares(incremental, tubes).planned < shares.planned  # the masks share tubes 0, 1, 2, 4, 7, 9, 10
