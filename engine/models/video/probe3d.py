"""Probe3D: a tiny 3D CNN for the synthetic motion benchmark (DESIGN.md section 6), fast on a CPU."""

from __future__ import annotations

from torch import Tensor, nn

POOLS = {"avg": nn.AdaptiveAvgPool3d, "max": nn.AdaptiveMaxPool3d}


def _stage(in_channels: int, out_channels: int, stride: tuple[int, int, int]) -> nn.Sequential:
    """Conv3d (3x3x3) + BatchNorm3d + ReLU; the stride downsamples (time, height, width)."""
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class Probe3D(nn.Module):
    """(B, 3, T, H, W) clip -> (B, num_classes) logits; `features[-1]` is the last conv stage (Grad-CAM target).

    For a 16x112x112 clip the stages give 16x56x56, 8x28x28 and 8x14x14 feature maps. `pool` "max" keeps the
    strongest response over the clip instead of the mean: one small object's evidence is not averaged away
    by the distractors around it.
    """

    def __init__(self, num_classes: int = 4, width: int = 16, pool: str = "avg") -> None:
        super().__init__()
        self.features = nn.Sequential(
            _stage(3, width, stride=(1, 2, 2)),
            _stage(width, 2 * width, stride=(2, 2, 2)),
            _stage(2 * width, 4 * width, stride=(1, 2, 2)),
        )
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r}; expected one of {', '.join(POOLS)}")
        self.pool = POOLS[pool](1)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, clip: Tensor) -> Tensor:
        return self.fc(self.pool(self.features(clip)).flatten(1))


def probe3d(num_classes: int = 4, width: int = 16, pool: str = "avg") -> Probe3D:
    """Build a randomly initialised Probe3D (the zoo seeds the initialisation)."""
    return Probe3D(num_classes=num_classes, width=width, pool=pool)
