"""Scoring occluded clips batch by batch, and aggregating per-mask values into a voxel map."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from aosa.kernels.fills import Fill
from aosa.kernels.incremental import IncrementalModel
from aosa.kernels.scoring import ScoreFunction, batch_format, channel_inner, target_scores
from aosa.kernels.tubes import TubeSet

CHECKED = 2  # masks of a clip scored incrementally that are scored dense too (one dense pass each, per fill draw)
CHECK_TOLERANCE = 5e-5  # largest |incremental - dense| score accepted, times max(1, |dense score|): the two differ by
                        # float rounding (<= 5e-7 in logits); an unmodelled in-place op moved a probability by 1.6e-4


@dataclass(frozen=True)
class Inference:
    """How one map's (or shard's) occlusion scores were computed: `path` "incremental" or "dense"; `note` why dense
    where incremental was tried or asked for; `max_diff` the largest |incremental - dense| score over the masks
    scored both ways (None where none was); `clips` and `seconds` the occluded clips scored incrementally, with no
    call of the model, and their seconds."""

    path: str
    note: str | None = None
    max_diff: float | None = None
    clips: int = 0
    seconds: float = 0.0

    @property
    def mismatch(self) -> bool:
        """The check found the incremental scores off the dense ones, so they were scored dense."""
        return self.path == "dense" and self.max_diff is not None

    @classmethod
    def of_shards(cls, parts: list[Inference]) -> Inference:
        """One map's Inference from its shards': dense where any shard's check failed, the largest difference."""
        mismatch = any(part.mismatch for part in parts)
        path = "incremental" if not mismatch and any(part.path == "incremental" for part in parts) else "dense"
        notes = [part.note for part in parts if part.note]
        return cls(path, notes[0] if notes else None,
                   max((part.max_diff for part in parts if part.max_diff is not None), default=None),
                   sum(part.clips for part in parts), sum(part.seconds for part in parts))


@torch.no_grad()
def occlusion_scores(score: Callable[[torch.Tensor], torch.Tensor], clip: torch.Tensor, tubes: TubeSet,
                     fill: Fill, index: torch.Tensor | None = None, batch_size: int = 16,
                     incremental: IncrementalModel | None = None) -> torch.Tensor:
    """Target scores (len(index),) of the clip with each mask in `index` occluded, averaged over fill draws.

    Dense: occluded batches are written into one buffer on the clip's device from box coordinates kept there,
    so a map allocates no clip-sized tensor per draw; the buffer has the layout the model runs fastest
    (kernels.scoring.batch_format: channels-last for 3D CNNs on a CPU). `incremental` (built for this clip):
    exact logits that recompute only what each mask changes; then `score` must be a ScoreFunction (its target
    and kind are used).
    """
    index = torch.arange(len(tubes)) if index is None else index
    if incremental is not None:
        return _incremental_scores(score, incremental, tubes, fill, index, batch_size)
    device = clip.device
    tubes = TubeSet(tubes.boxes.to(device), tubes.groups.to(device), tubes.height, tubes.width)
    layout = batch_format(score)
    buffer = torch.empty((min(batch_size, len(index)), *clip.shape), dtype=clip.dtype, device=device,
                         memory_format=layout)
    # Every operand of the lerp walks memory in the batch's order: for channels-last, (T, H, W*C) views with the
    # masks repeated per channel (a mask broadcast over an innermost channel axis of 3 ran 5x slower).
    repeat = clip.shape[0] if layout == torch.channels_last_3d else 1
    laid = channel_inner if repeat > 1 else (lambda x: x)
    planes = torch.empty((len(buffer), *clip.shape[1:3], clip.shape[3] * repeat), dtype=clip.dtype, device=device)
    clean, values = laid(clip), [laid(value.expand_as(clip)) for value in fill.draws]
    results = []
    for chunk in index.to(device).split(batch_size):
        # lerp with 0/1 weights is exactly torch.where(mask, value, clip) (its weight-1 branch returns `end`) and
        # faster on a CPU; both buffers are reused (a probe batch of 16: 6.7 ms to build, 66 ms of forwards)
        weights = tubes.weights(chunk, planes[:len(chunk)], repeat)  # (B, T, H, W * repeat)
        weights = weights.unsqueeze(1) if repeat == 1 else weights
        occluded = buffer[:len(chunk)]
        total = 0
        for value in values:
            torch.lerp(clean, value, weights, out=laid(occluded))
            total = total + score(occluded)
        results.append(total / len(fill.draws))
    return torch.cat(results) if results else torch.zeros(0, device=device)


def _incremental_scores(score: Callable[[torch.Tensor], torch.Tensor], incremental: IncrementalModel,
                        tubes: TubeSet, fill: Fill, index: torch.Tensor, batch_size: int) -> torch.Tensor:
    """occlusion_scores through an IncrementalModel: geometry plans of as many masks as their patches' memory
    allows (`incremental.plans`: masks of a plan share tiles), each reused by every draw; the layers past a plan's
    cut run `batch_size` masks at a time."""
    if not isinstance(score, ScoreFunction):
        raise TypeError(f"incremental occlusion needs a ScoreFunction (target and kind), got {type(score).__name__}")
    results = []
    for _, plan in incremental.plans(tubes, index, batch_size):
        total = sum(target_scores(incremental.logits(plan, value, batch_size), score.target, score.kind)
                    for value in fill.draws)
        results.append(total / len(fill.draws))
    return torch.cat(results) if results else torch.zeros(0, device=incremental.clip.device)


def checked_masks(tubes: TubeSet, count: int = CHECKED) -> torch.Tensor:
    """Numbers of the `count` masks whose incremental scores are checked against dense ones: the largest (its
    changes reach furthest, past where the incremental path goes dense) and others spread down the volumes (the
    median for two)."""
    order = torch.argsort(tubes.volumes(), stable=True)
    if not len(order):
        return order
    return order[torch.linspace(len(order) - 1, 0, count + 1)[:count].round().long().unique()]


def checked_scores(score: ScoreFunction, clip: torch.Tensor, tubes: TubeSet, fill: Fill,
                   index: torch.Tensor | None, batch_size: int, incremental: IncrementalModel | None,
                   note: str | None = None) -> tuple[torch.Tensor, Inference]:
    """occlusion_scores of the masks `index` (all by default) and how they were computed. Through `incremental`
    where it is given, then checked: the `checked_masks` among `index` are scored dense too, and a difference past
    CHECK_TOLERANCE has every mask scored dense, the Inference saying so. `note`: why dense where it is None."""
    index = torch.arange(len(tubes)) if index is None else index
    if incremental is None:
        return occlusion_scores(score, clip, tubes, fill, index, batch_size), Inference("dense", note)
    began = time.perf_counter()
    scores = occlusion_scores(score, clip, tubes, fill, index, batch_size, incremental)
    clips, seconds = len(index) * len(fill.draws), time.perf_counter() - began
    position = torch.isin(index, checked_masks(tubes).to(index.device)).nonzero()[:, 0]
    if not len(position):
        return scores, Inference("incremental", clips=clips, seconds=seconds)
    dense = occlusion_scores(score, clip, tubes, fill, index[position], batch_size)
    diff = (scores[position.to(scores.device)] - dense).abs()
    worst, limit = float(diff.max()), CHECK_TOLERANCE * max(1.0, float(dense.abs().max()))
    if worst <= limit:
        return scores, Inference("incremental", max_diff=worst, clips=clips, seconds=seconds)
    mask = int(index[position][int(diff.argmax())])
    note = f"incremental scores differed from dense by {worst:.3g} (> {limit:.3g}) on mask {mask}: scored dense"
    rescored = occlusion_scores(score, clip, tubes, fill, index, batch_size)
    return rescored, Inference("dense", note, worst, clips, seconds)


def aggregate(tubes: TubeSet, values: torch.Tensor, mode: str = "coverage") -> torch.Tensor:
    """Voxel map (T, H, W) float32 from per-mask score drops `values` (N,).

    `coverage`: sum_i v_i occ_i(p) / sum_i occ_i(p), 0 where no mask covers p.
    `rise`: (1/N) sum_i -v_i keep_i(p) / mean(keep_i), keep_i = 1 - occ_i (the paper's eq. 2 in the
    reference code's form); a mask that covers everything keeps nothing and adds nothing.
    """
    if mode not in ("coverage", "rise"):
        raise ValueError(f"unknown aggregate {mode!r}; expected coverage or rise")
    # Box geometry first: on a GPU this CPU work overlaps the scoring still queued there, which .cpu() waits for.
    if mode == "coverage":
        coverage = tubes.paint(torch.ones(len(tubes), dtype=torch.float64))
        weighted = tubes.paint(values.detach().double().cpu())
        result = torch.where(coverage > 0.5, weighted / coverage.clamp_min(1), torch.zeros_like(weighted))
    else:
        kept = 1.0 - tubes.volumes() / (tubes.frames * tubes.height * tubes.width)
        values = values.detach().double().cpu()
        weight = torch.where(kept > 0, -values / kept.clamp_min(1e-12), torch.zeros_like(kept))
        result = (weight.sum() - tubes.paint(weight)) / len(tubes)
    return result.float()
