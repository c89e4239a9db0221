"""TimeSformer from a local Hugging Face directory (what `save_pretrained` writes), wrapped to take our clips.

`transformers` is an optional extra (`families`): it is imported only when a directory is loaded, so the engine
runs without it, and nothing is ever downloaded (`local_files_only=True`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aosa.engine.errors import ModelError, short_reason, shown_keys
from aosa.schemas.preprocessing import Preprocessing, PreprocessingError

log = logging.getLogger(__name__)

MODEL_TYPE = "timesformer"
DIVIDED = "divided_space_time"  # the only attention type whose attentions rollout reads
IMAGE_PROCESSOR_NORMALIZATION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # VideoMAEImageProcessor: IMAGENET_STANDARD_*
VIDEO_PROCESSOR_NORMALIZATION = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # TimesformerVideoProcessor
PROCESSOR_FILES = {"preprocessor_config.json": IMAGE_PROCESSOR_NORMALIZATION,
                   "video_preprocessor_config.json": VIDEO_PROCESSOR_NORMALIZATION}
"""Processor files save_pretrained writes, in the order read, with the mean/std HF uses when a file omits them."""


class TimesformerClip(nn.Module):
    """A TimesformerForVideoClassification that takes our (B, C, T, H, W) normalized clips and returns logits.

    Hugging Face wants pixel_values (B, T, C, H, W); its layers reshape by the config's frame count and size,
    so any other clip shape would be silently misread: it is refused instead.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        config = model.config
        self.frames, self.size, self.patch = config.num_frames, config.image_size, config.patch_size
        self.attention_type = config.attention_type

    def forward(self, batch: Tensor) -> Tensor:
        shape = tuple(batch.shape[2:])
        if shape != (self.frames, self.size, self.size):
            raise ValueError(f"this TimeSformer takes clips of {self.frames} frames at {self.size}x{self.size}; "
                             f"got {shape[0]} frames at {shape[1]}x{shape[2]}")
        return self.model(pixel_values=batch.transpose(1, 2)).logits

    def divided_attentions(self, batch: Tensor) -> list[tuple[Tensor, Tensor]]:
        """Per layer, the head-averaged attention probabilities of one forward pass: temporal (B, P, T, T), each
        patch over its frames, and spatial (B, T, 1+P, 1+P), each frame's CLS copy (token 0) and its P patches.

        HF's output_attentions returns only the spatial ones, so both are read by pre-hooks on the self-attentions'
        `attn_drop`, whose input is the softmax; patches are in row-major order of the patch grid.
        """
        if self.attention_type != DIVIDED:
            raise ValueError(f"attention rollout needs attention_type {DIVIDED!r}; this TimeSformer uses "
                             f"{self.attention_type!r}")
        captured: list[Tensor] = []
        layers = self.model.timesformer.encoder.layer
        hooks = [attention.attention.attn_drop.register_forward_pre_hook(
                     lambda _, args: captured.append(args[0].mean(dim=1)))
                 for layer in layers for attention in (layer.temporal_attention, layer.attention)]
        try:
            with torch.no_grad():
                self(batch.to(self.model.device))
        finally:
            for hook in hooks:
                hook.remove()
        count, patches = batch.shape[0], (self.size // self.patch) ** 2
        return [(temporal.reshape(count, patches, self.frames, self.frames),
                 spatial.reshape(count, self.frames, 1 + patches, 1 + patches))
                for temporal, spatial in zip(captured[0::2], captured[1::2])]


def load_timesformer(directory: Path) -> tuple[TimesformerClip, Preprocessing]:
    """The TimeSformer saved in `directory` (safetensors preferred over pytorch_model.bin), in eval mode, with the
    preprocessing its config and processor file give; every failure is one ModelError line naming the directory."""
    _check_model_type(directory)
    try:
        from transformers import TimesformerForVideoClassification
    except ImportError:
        raise ModelError(f"{directory}: a TimeSformer directory needs the transformers package; "
                         "pip install -e '.[families]'") from None
    try:
        model, info = TimesformerForVideoClassification.from_pretrained(
            directory, local_files_only=True, dtype=torch.float32, output_loading_info=True)
    except Exception as exc:  # safetensors, torch.load and config errors alike; none may escape raw
        raise ModelError(f"{directory}: TimeSformer weights do not load ({short_reason(exc)})") from None
    misfit = [f"{what} {shown_keys(sorted(info[f'{what}_keys']))}" for what in ("missing", "unexpected")
              if info[f"{what}_keys"]]
    if misfit:  # HF would initialize missing weights at random and carry on
        raise ModelError(f"{directory}: weights do not fit its config.json: {'; '.join(misfit)}")
    return TimesformerClip(model).eval(), _preprocessing(directory, model.config)


def _check_model_type(directory: Path) -> None:
    """The directory's config.json must exist and name model_type "timesformer"."""
    path = directory / "config.json"
    if not path.is_file():
        raise ModelError(f"{directory}: no config.json; a model directory is what a Hugging Face TimeSformer's "
                         "save_pretrained writes")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{directory}: config.json is unreadable ({short_reason(exc)})") from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != MODEL_TYPE:
        raise ModelError(f"{directory}: config.json has model_type {model_type!r}; only {MODEL_TYPE!r} "
                         "directories load")


def _preprocessing(directory: Path, config: Any) -> Preprocessing:
    """Frames and square size from the config, classes from id2label in index order, mean/std from the processor."""
    mean, std = _normalization(directory)
    classes = tuple(str(label) for _, label in sorted(config.id2label.items()))
    try:
        return Preprocessing(frames=config.num_frames, size=(config.image_size, config.image_size), mean=mean,
                             std=std, classes=classes)
    except PreprocessingError as exc:
        raise ModelError(f"{directory}: {exc}") from None


def _normalization(directory: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """image_mean/image_std of the first processor file present, over that processor's own defaults; with no file,
    VideoMAEImageProcessor's (0.5, 0.5, 0.5) for both, which AutoImageProcessor uses for model_type timesformer."""
    for name, (mean, std) in PROCESSOR_FILES.items():
        path = directory / name
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                return _triple(data.get("image_mean", mean)), _triple(data.get("image_std", std))
            except (OSError, ValueError, TypeError, AttributeError) as exc:
                raise ModelError(f"{path}: no readable image_mean/image_std ({short_reason(exc)})") from None
    log.warning("%s: no %s; using the image processor's mean and std %s", directory, " or ".join(PROCESSOR_FILES),
                IMAGE_PROCESSOR_NORMALIZATION[0])
    return IMAGE_PROCESSOR_NORMALIZATION


def _triple(value: float | list[float]) -> tuple[float, ...]:
    """A processor's per-channel values; HF also allows one number for all channels."""
    return (float(value),) * 3 if isinstance(value, (int, float)) else tuple(float(v) for v in value)


