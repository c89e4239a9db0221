"""The benchmark's clips: a synthetic video whose flow has structure to track, normalized as a model expects."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from aosa.engine.models.loading import LoadedModel


def synthetic_video(frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (T,H,W,3): a textured background panning 1 px/frame and a textured square crossing it diagonally."""
    rng = np.random.default_rng(seed)
    background = _texture(rng, height, width + frames, cell=12)
    side = max(4, min(height, width) // 4)
    square = _texture(rng, side, side, cell=4)[..., ::-1]
    margin = min(height, width) // 8
    ys = np.linspace(margin, height - side - margin, frames).round().astype(int)
    xs = np.linspace(margin, width - side - margin, frames).round().astype(int)
    video = np.stack([background[:, frames - t:frames - t + width] for t in range(frames)])
    for t, (y, x) in enumerate(zip(ys, xs)):
        video[t, y:y + side, x:x + side] = square
    return video


def _texture(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """uint8 (H,W,3): smooth colour blobs about `cell` px wide plus fine grain, so flow has structure to track."""
    coarse = rng.uniform(0, 255, (height // cell + 2, width // cell + 2, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


def normalized_clip(video: np.ndarray, model: LoadedModel) -> torch.Tensor:
    """(C,T,H,W) float32 on the model's device, normalized with the model's mean and std."""
    prep = model.preprocessing
    pixels = torch.from_numpy(video).float().div(255).permute(3, 0, 1, 2)
    mean = torch.tensor(prep.mean).view(3, 1, 1, 1)
    std = torch.tensor(prep.std).view(3, 1, 1, 1)
    return ((pixels - mean) / std).contiguous().to(model.device)
