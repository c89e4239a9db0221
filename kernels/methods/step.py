"""STEP: spatio-temporal extremal perturbation (Li et al., WACV 2021), i.e. extremal perturbation (Fong et al.,
ICCV 2019) on clips: per area, the smooth mask of that volume whose kept voxels (the rest blurred) keep the target
score best.

Constants follow the public code: TorchRay's `torchray/attribution/extremal_perturbation.py` and STEP's
shinkyo0513/Spatio-Temporal-Perturbations-for-Video-Attribution `visual_meth/perturbation_area.py` and `run_all.py`.
Pixel sizes are STEP's at 112 px and scale with the frame's shorter side.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from aosa.kernels.filters import blur_frames
from aosa.kernels.methods.base import ExplanationMethod

REFERENCE_SIDE = 112      # frame side the pixel constants below are STEP's values for
GRID_STEP = 7             # px between mask parameters (TorchRay and STEP: step=7)
MASK_SIGMA = 11.0         # px reach of one parameter's bump (STEP: sigma=11 at 112 px)
COLDNESS = 20.0           # smooth-max temperature (TorchRay's MaskGenerator)
SAMPLES_PER_CELL = 2      # smooth max evaluated at 2 x 2 points per parameter cell, then bilinear to pixels
BLUR_SIGMA = 20.0         # px, the perturbed substrate (TorchRay/STEP blur pyramid's strongest level)
CORE_SIDE = 11            # px, spatial diameter of the smoothness term's ellipsoid (STEP: core_spatial_size=11)
AREA_WEIGHT = 300.0       # area term weight at the end (TorchRay and STEP: regul_weight=300) ...
AREA_GROWTH = 16.0        # ... after growing 16x over the run (TorchRay: x1.0035 per step over 800 steps)
SMOOTHNESS_START = 0.1    # smoothness term off for the first 10% of steps (STEP: from step 100 of 1000)
TIE_JITTER = 1e-6         # random tie-break when ranking mask values (STEP shuffles before sorting)


def _odd(value: float) -> int:
    return max(1, round(value)) | 1


class SmoothMask:
    """TorchRay's smooth mask: coarse parameters in [0, 1] on a grid, each a flat-topped Gaussian bump, combined by
    a smooth max (softmax-weighted, coldness 20) over the neighbours in reach, so masks stay in [0, 1], edge-free.

    The grid is padded by repeating its edge, so border pixels have full neighbourhoods: with neighbours missing
    there (TorchRay pads with zeros), the smooth max, an average dragged down by middling neighbours, favours
    borders."""

    def __init__(self, height: int, width: int, device: torch.device) -> None:
        scale = min(height, width) / REFERENCE_SIDE
        self.step, sigma = max(1, round(GRID_STEP * scale)), MASK_SIGMA * scale
        self.size, self.samples = (height, width), min(SAMPLES_PER_CELL, self.step)
        self.radius = math.ceil(sigma / self.step)  # TorchRay reaches one cell further, to bumps below 0.04
        self.grid = (math.ceil(height / self.step), math.ceil(width / self.step))
        offsets = torch.arange(-self.radius, self.radius + 1, device=device)
        within = (torch.arange(self.samples, device=device) + 0.5) * (self.step / self.samples) - 0.5
        gap = within[:, None] - (offsets * self.step + (self.step - 1) / 2)  # (samples, k) px to neighbour centres
        distance = (gap[:, None, :, None] ** 2 + gap[None, :, None, :] ** 2).sqrt() / sigma
        bump = torch.exp(-2 * (distance - 0.5).clamp_min(0) ** 2)  # (samples, samples, k, k)
        self.weight = bump.flatten(2)[None, None, :, None]  # (1, 1, s, 1, s, k*k), neighbours in F.unfold's order

    def __call__(self, params: torch.Tensor) -> torch.Tensor:
        """Masks (N, H, W) from parameters (N, *grid)."""
        (rows, cols), side, s = self.grid, 2 * self.radius + 1, self.samples
        padded = F.pad(params[:, None], (self.radius,) * 4, mode="replicate")
        near = F.unfold(padded, side).view(len(params), side * side, rows, cols)
        values = near.permute(0, 2, 3, 1)[:, :, None, :, None] * self.weight  # (N, rows, s, cols, s, k*k)
        smooth_max = (values * torch.softmax(COLDNESS * values, dim=-1)).sum(dim=-1)
        samples = smooth_max.view(len(params), 1, rows * s, cols * s)
        full = F.interpolate(samples, size=(rows * self.step, cols * self.step), mode="bilinear", align_corners=False)
        return full[:, 0, :self.size[0], :self.size[1]]


def ellipsoid(frames: int, side: int, device: torch.device) -> torch.Tensor:
    """The voxels whose centres lie in the ellipsoid inscribed in a frames x side x side box, (1, 1, T, s, s): the
    'core' of STEP's smoothness term. About pi/6 of the box, the volume STEP counts cores with."""
    def axis(size: int) -> torch.Tensor:
        return (torch.arange(size, device=device) - (size - 1) / 2) / (size / 2)

    t, y, x = torch.meshgrid(axis(frames), axis(side), axis(side), indexing="ij")
    return (t ** 2 + y ** 2 + x ** 2 <= 1).float()[None, None]


def step_mismatch(values: torch.Tensor, ones: list[int], jitter: torch.Tensor) -> torch.Tensor:
    """(A,) mean squared gap between row a of `values` sorted and a step ending in `ones[a]` ones (EP's area term).

    Equal to sorting, but only selects each row's `ones[a]` largest values (ties broken by `jitter`)."""
    with torch.no_grad():
        keys = values + jitter
        count = values.shape[1]
        thresholds = torch.stack([row.kthvalue(count - k + 1).values for row, k in zip(keys, ones)])
        top = keys >= thresholds[:, None]
    return torch.where(top, (1 - values) ** 2, values ** 2).mean(dim=1)


def substrate(clip: torch.Tensor) -> torch.Tensor:
    """What STEP's masks keep the clip against: each (C, T, H, W) frame blurred with sigma 20 px at 112 px."""
    height, width = clip.shape[-2:]
    sigma = BLUR_SIGMA * min(height, width) / REFERENCE_SIDE
    return blur_frames(clip, _odd(min(6 * sigma, 2 * min(height, width) - 1)), sigma)


class PreservationGame:
    """STEP's energy for A masks at once: -log p(target | clip kept where the mask is 1, blurred elsewhere)
    + area term (each mask's sorted values vs a step of its area) + smoothness term (solid ellipsoid 'cores')."""

    def __init__(self, method: ExplanationMethod, clip: torch.Tensor, target: int, areas: tuple[float, ...]) -> None:
        _, frames, height, width = clip.shape
        scale = min(height, width) / REFERENCE_SIDE
        self.model, self.target, self.kind, self.dtype = method.model, target, method.params.score, clip.dtype
        self.clip = clip.float()
        self.blurred = substrate(self.clip)
        self.shape = (len(areas), frames, height, width)
        self.mask = SmoothMask(height, width, clip.device)
        self.core_stride = _odd(CORE_SIDE * scale)
        self.core = ellipsoid(max(1, frames // 2), self.core_stride, clip.device)
        volume, core = frames * height * width, self.core.sum().item()
        cores = (frames - self.core.shape[2] + 1) * (height // self.core_stride) * (width // self.core_stride)
        self.kept = [min(max(1, round(area * volume)), volume) for area in areas]
        self.cores = [min(max(1, math.ceil(area * volume / core)), cores) for area in areas]
        self.random = torch.Generator().manual_seed(method.params.seed)

    def masks(self, params: torch.Tensor) -> torch.Tensor:
        """(A, T, H, W) masks from (A * T, *grid) parameters: one smooth mask per frame and area."""
        return self.mask(params).view(self.shape)

    def jitter(self, count: int) -> torch.Tensor:
        """Seeded tie-breaking noise for `count` ranked values, drawn on the CPU so every device gets the same."""
        return (TIE_JITTER * torch.rand(count, generator=self.random)).to(self.clip.device)

    def log_scores(self, masks: torch.Tensor) -> torch.Tensor:
        """(A,) log softmax probability (STEP's reward; `score=logit`: the logit, TorchRay's) of the target."""
        batch = self.blurred + masks[:, None] * (self.clip - self.blurred)  # (A, C, T, H, W)
        logits = self.model(batch.to(self.dtype)).float()
        return (torch.log_softmax(logits, dim=1) if self.kind == "prob" else logits)[:, self.target]

    def smoothness(self, masks: torch.Tensor) -> torch.Tensor:
        """(A,) STEP's core term: the mask's mean inside an ellipsoid (T/2 frames, 11 px at 112) at each position
        (stride: its width), sorted; as many positions as the area can fill are pulled to 1, the rest to 0."""
        stride = (1, self.core_stride, self.core_stride)
        occupancy = F.conv3d(masks[:, None], self.core, stride=stride).flatten(1) / self.core.sum()
        return step_mismatch(occupancy, self.cores, self.jitter(occupancy.shape[1]))

    def energy(self, params: torch.Tensor, area_weight: float, smoothness: float) -> torch.Tensor:
        """The summed energy of all areas' masks, to minimize."""
        masks = self.masks(params)
        flat = masks.flatten(1)
        energy = -self.log_scores(masks) + area_weight * step_mismatch(flat, self.kept, self.jitter(flat.shape[1]))
        if smoothness:
            energy = energy + smoothness * self.smoothness(masks)
        return energy.sum()


class STEP(ExplanationMethod):
    """Adam on all areas' mask parameters at once (one batched forward and backward per step); the map is the sum of
    the areas' masks, as TorchRay's benchmark and STEP's evaluation sum them. `seed` only breaks ranking ties."""

    name = "step"

    def attribute(self, inputs: torch.Tensor, target: int, flow: torch.Tensor | None = None) -> torch.Tensor:
        p = self.params
        game = PreservationGame(self, inputs.detach().clone(), target, p.area_values)
        areas, frames = game.shape[:2]
        params = torch.ones(areas * frames, *game.mask.grid, device=inputs.device, requires_grad=True)
        optimizer = torch.optim.Adam([params], lr=p.learning_rate)
        with torch.enable_grad():
            for step in range(p.iterations):
                smoothness = p.smoothness if step >= SMOOTHNESS_START * p.iterations else 0.0
                energy = game.energy(params, AREA_WEIGHT * AREA_GROWTH ** ((step + 1) / p.iterations - 1), smoothness)
                (params.grad,) = torch.autograd.grad(energy, params)
                optimizer.step()
                with torch.no_grad():
                    params.clamp_(0, 1)
                if self.progress is not None:
                    self.progress(step + 1, p.iterations)
        with torch.no_grad():
            return game.masks(params).sum(dim=0).float()
