"""The normalized input space of a model: which values mean black, and the valid value range."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class InputSpace:
    """Inputs are (pixel / 255 - mean) / std per RGB channel, laid out (C, T, H, W)."""

    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def _per_channel(self, values: list[float], like: torch.Tensor) -> torch.Tensor:
        return torch.tensor(values, dtype=like.dtype, device=like.device).view(-1, 1, 1, 1)

    def black(self, like: torch.Tensor) -> torch.Tensor:
        """Black pixels in this space, shaped (C, 1, 1, 1) to broadcast over a clip."""
        return self._per_channel([-m / s for m, s in zip(self.mean, self.std)], like)

    def white(self, like: torch.Tensor) -> torch.Tensor:
        """White pixels in this space, shaped (C, 1, 1, 1)."""
        return self._per_channel([(1 - m) / s for m, s in zip(self.mean, self.std)], like)

    def value_range(self) -> float:
        """Width of the valid value range, the largest over channels (used to scale noise)."""
        return max(1.0 / s for s in self.std)
