"""TimeSformer from a Hugging Face directory and Attention Rollout: a tiny random model saved in the original layout,
loaded back and compared; the rollout recursion against a dense computation, a hand case and the live model."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from aosa.engine.errors import ModelError  # noqa: E402
from aosa.engine.models.loading import LoadedModel, load_model  # noqa: E402
from aosa.engine.models.video.timesformer import TimesformerClip  # noqa: E402
from aosa.kernels.methods import get_method  # noqa: E402
from aosa.kernels.methods.rollout import divided_rollout  # noqa: E402
from aosa.schemas.method_params import MethodParams  # noqa: E402
from tests.seeding import seeded  # noqa: E402

FRAMES, SIZE, PATCH = 4, 32, 8
PATCHES = (SIZE // PATCH) ** 2
LABELS = ("walk", "run", "jump", "sit", "wave", "clap", "swim", "read", "cook", "draw", "sing", "kick")  # 12: index
MEAN, STD = (0.45, 0.4, 0.35), (0.225, 0.2, 0.25)                              # order is not string order


def tiny_config(attention_type: str = "divided_space_time") -> transformers.TimesformerConfig:
    return transformers.TimesformerConfig(
        image_size=SIZE, patch_size=PATCH, num_frames=FRAMES, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, attention_type=attention_type,
        id2label=dict(enumerate(LABELS)), label2id={label: i for i, label in enumerate(LABELS)})


def clip(frames: int = FRAMES, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, frames, SIZE, SIZE, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def original() -> torch.nn.Module:
    """A random tiny TimeSformer whose position and time embeddings are non-zero, so a token mix-up shows."""
    with seeded(0), torch.no_grad():
        model = transformers.TimesformerForVideoClassification(tiny_config()).eval()
        embeddings = model.timesformer.embeddings
        for tensor in (embeddings.position_embeddings, embeddings.time_embeddings):
            tensor.normal_(std=0.5)
    return model


@pytest.fixture(scope="module")
def saved(original: torch.nn.Module, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the model's and its image processor's save_pretrained write."""
    directory = tmp_path_factory.mktemp("timesformer")
    original.save_pretrained(directory)
    transformers.VideoMAEImageProcessor(image_mean=list(MEAN), image_std=list(STD)).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def loaded(saved: Path) -> LoadedModel:
    return load_model(str(saved))


def copy_of(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


# -- loading ------------------------------------------------------------------------------------------------------

def test_directory_loads_with_the_original_outputs(original: torch.nn.Module, loaded: LoadedModel) -> None:
    batch = clip()
    with torch.no_grad():
        expected = original(pixel_values=batch.permute(0, 2, 1, 3, 4)).logits
        actual = loaded(batch)
    assert actual.shape == (2, len(LABELS))
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert isinstance(loaded.module, TimesformerClip) and not loaded.module.training


def test_preprocessing_comes_from_the_directory(loaded: LoadedModel) -> None:
    preprocessing = loaded.preprocessing
    assert (preprocessing.frames, preprocessing.size) == (FRAMES, (SIZE, SIZE))
    assert preprocessing.mean == pytest.approx(MEAN) and preprocessing.std == pytest.approx(STD)
    assert preprocessing.classes == LABELS and loaded.num_classes == len(LABELS)


def test_without_a_processor_file_the_image_processor_defaults_apply(saved: Path, tmp_path: Path) -> None:
    directory = copy_of(saved, tmp_path)
    (directory / "preprocessor_config.json").unlink()
    preprocessing = load_model(str(directory)).preprocessing
    assert preprocessing.mean == preprocessing.std == (0.5, 0.5, 0.5)


def test_a_clip_of_another_shape_is_refused(loaded: LoadedModel) -> None:
    with pytest.raises(ValueError, match=r"takes clips of 4 frames at 32x32; got 8 frames at 32x32"):
        loaded(clip(frames=8))


def test_directory_without_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match=rf"^{re.escape(str(tmp_path / 'empty'))}: no config\.json"):
        load_model(str(tmp_path / "empty"))


def test_directory_of_another_model_type_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "videomae", "num_frames": 16}))
    with pytest.raises(ModelError, match=rf"^{re.escape(str(tmp_path))}: config\.json has model_type 'videomae'"):
        load_model(str(tmp_path))


def test_corrupt_weights_are_refused(saved: Path, tmp_path: Path) -> None:
    directory = copy_of(saved, tmp_path)
    (directory / "model.safetensors").write_bytes(b"not a safetensors file" * 10)
    with pytest.raises(ModelError, match=rf"^{re.escape(str(directory))}: TimeSformer weights do not load \(\w+"):
        load_model(str(directory))


def test_weights_missing_a_tensor_are_refused(original: torch.nn.Module, saved: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    directory = copy_of(saved, tmp_path)
    state = {k: v.contiguous() for k, v in original.state_dict().items() if not k.startswith("classifier.")}
    save_file(state, directory / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=rf"^{re.escape(str(directory))}: weights do not fit .*missing classifier"):
        load_model(str(directory))


def test_missing_transformers_names_the_extra(saved: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ModelError, match=r"needs the transformers package; pip install -e '\.\[families\]'"):
        load_model(str(saved))


# -- the attentions the wrapper captures ----------------------------------------------------------------------------

def test_captured_attentions_are_what_the_model_computes(loaded: LoadedModel) -> None:
    """Spatial: HF's own output_attentions. Temporal (HF does not return it): recomputed from each layer's input."""
    batch = clip()
    attentions = loaded.module.divided_attentions(batch)
    hf = loaded.module.model
    with torch.no_grad():
        outputs = hf(pixel_values=batch.transpose(1, 2), output_attentions=True, output_hidden_states=True)
    assert len(attentions) == 2
    for layer, (temporal, spatial), hidden, hf_spatial in zip(
            hf.timesformer.encoder.layer, attentions, outputs.hidden_states, outputs.attentions):
        assert temporal.shape == (2, PATCHES, FRAMES, FRAMES)
        assert spatial.shape == (2, FRAMES, 1 + PATCHES, 1 + PATCHES)
        for probabilities in (temporal, spatial):
            torch.testing.assert_close(probabilities.sum(-1), torch.ones(probabilities.shape[:-1]))
        torch.testing.assert_close(spatial, hf_spatial.mean(1).reshape(spatial.shape))
        tokens = hidden[:, 1:].reshape(2, PATCHES, FRAMES, -1)  # HF orders patch-major, frame-minor
        with torch.no_grad():
            qkv = layer.temporal_attention.attention.qkv(layer.temporal_layernorm(tokens)).unflatten(-1, (3, 2, 16))
        scores = torch.einsum("bpthd,bpshd->bphts", qkv[..., 0, :, :], qkv[..., 1, :, :]) * 16 ** -0.5
        torch.testing.assert_close(temporal, scores.softmax(-1).mean(2))


# -- the rollout recursion ------------------------------------------------------------------------------------------

def random_attentions(layers: int, frames: int, patches: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    return [(torch.rand(1, patches, frames, frames, generator=generator, dtype=torch.float64).softmax(-1),
             torch.rand(1, frames, 1 + patches, 1 + patches, generator=generator, dtype=torch.float64).softmax(-1))
            for _ in range(layers)]


def dense_layer(temporal: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
    """The layer's full token-mixing matrix, rows = outputs, tokens CLS then (t, p) at 1 + t P + p."""
    patches, frames = temporal.shape[:2]
    size = 1 + frames * patches
    token = lambda t, p: 1 + t * patches + p  # noqa: E731
    time_mix, space_mix = torch.eye(size, dtype=torch.float64) / 2, torch.eye(size, dtype=torch.float64) / 2
    time_mix[0, 0] = 1
    for t in range(frames):
        for p in range(patches):
            for s in range(frames):
                time_mix[token(t, p), token(s, p)] += temporal[p, t, s] / 2
            space_mix[token(t, p), 0] += spatial[t, 1 + p, 0] / 2
            space_mix[0, token(t, p)] += spatial[t, 0, 1 + p] / (2 * frames)
            for q in range(patches):
                space_mix[token(t, p), token(t, q)] += spatial[t, 1 + p, 1 + q] / 2
        space_mix[0, 0] += spatial[t, 0, 0] / (2 * frames)
    return space_mix @ time_mix


def test_rollout_matches_the_dense_matrix_product() -> None:
    frames, patches = 3, 4
    attentions = random_attentions(layers=3, frames=frames, patches=patches)
    product = torch.eye(1 + frames * patches, dtype=torch.float64)
    for temporal, spatial in attentions:
        product = dense_layer(temporal[0], spatial[0]) @ product
    assert torch.allclose(product.sum(1), torch.ones(1 + frames * patches, dtype=torch.float64))
    expected = product[0, 1:].reshape(frames, patches)
    torch.testing.assert_close(divided_rollout(attentions)[0], expected, rtol=0, atol=1e-6)


def test_cls_attending_to_one_patch_puts_all_relevance_there() -> None:
    """Identity attentions except the last spatial one, where each frame's CLS attends only to patch p0: half the
    CLS relevance stays on it (residual), the other half splits over the T frame copies, all of it onto p0."""
    frames, patches, p0 = 3, 4, 2
    identity = (torch.eye(frames).expand(1, patches, frames, frames), torch.eye(1 + patches).expand(1, frames, -1, -1))
    last_spatial = identity[1].clone()
    last_spatial[:, :, 0] = 0
    last_spatial[:, :, 0, 1 + p0] = 1
    relevance = divided_rollout([identity, identity, (identity[0], last_spatial)])[0]
    expected = torch.zeros(frames, patches)
    expected[:, p0] = 0.5 / frames
    torch.testing.assert_close(relevance, expected, rtol=0, atol=0)


def test_rollout_of_the_loaded_model(loaded: LoadedModel) -> None:
    one = clip(batch=1)[0]
    method = get_method("rollout")(loaded, MethodParams(), None)
    saliency = method.attribute(one, target=0)
    assert saliency.shape == (FRAMES, SIZE, SIZE) and saliency.dtype == torch.float32
    assert torch.isfinite(saliency).all() and saliency.min() >= 0 and saliency.max() > 0
    relevance = divided_rollout(loaded.module.divided_attentions(one[None]))[0]
    grid = relevance.reshape(FRAMES, 1, SIZE // PATCH, SIZE // PATCH)
    expected = F.interpolate(grid, size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(saliency, expected, rtol=0, atol=0)
    torch.testing.assert_close(method.attribute(one, target=5), saliency, rtol=0, atol=0)  # class-agnostic


def test_rollout_refuses_a_clip_of_other_length(loaded: LoadedModel) -> None:
    with pytest.raises(ValueError, match="takes clips of 4 frames"):
        get_method("rollout")(loaded).attribute(clip(frames=8, batch=1)[0], target=0)


def test_rollout_needs_a_divided_space_time_transformer() -> None:
    convnet = torch.nn.Sequential(torch.nn.Conv3d(3, 2, 3), torch.nn.AdaptiveAvgPool3d(1), torch.nn.Flatten())
    with pytest.raises(ValueError, match=r"needs a divided space-time transformer \(e\.g\. a TimeSformer directory"):
        get_method("rollout")(convnet).attribute(clip(batch=1)[0], target=0)
    joint = TimesformerClip(transformers.TimesformerForVideoClassification(tiny_config("joint_space_time")).eval())
    with pytest.raises(ValueError, match="needs attention_type 'divided_space_time'; .* uses 'joint_space_time'"):
        get_method("rollout")(joint).attribute(clip(batch=1)[0], target=0)
