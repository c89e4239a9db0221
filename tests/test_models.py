"""Model specs: zoo entries, state dicts, torch.export and TorchScript files, sidecars, devices, bad files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision import models

from aosa.engine.errors import ModelError
from aosa.engine.models import zoo
from aosa.engine.models.loading import LoadedModel, load_model
from aosa.engine.models.zoo import ZOO
from tests.seeding import seeded

SMALL = (3, 8, 32, 32)  # (C, T, H, W) that Probe3D accepts; keeps every forward in milliseconds
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:FutureWarning")  # tests build TorchScript
# The Kinetics-400 CNNs at 112 px (and s3d); the 224-px transformers are covered by tests/test_families.py.
TORCHVISION = ["torchvision:r3d_18", "torchvision:mc3_18", "torchvision:r2plus1d_18", "torchvision:s3d"]


def clips(batch: int, shape: tuple[int, ...] = SMALL) -> torch.Tensor:
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(batch))


def perturbed_probe() -> nn.Module:
    """A Probe3D whose weights and BatchNorm statistics differ from the zoo's init."""
    module = ZOO["probe3d"].builder()
    with torch.no_grad():
        for tensor in module.state_dict().values():
            if tensor.is_floating_point():
                tensor.add_(torch.rand_like(tensor))
    return module.eval()


def write_sidecar(path: Path, data: dict | str) -> None:
    path.write_text(data if isinstance(data, str) else json.dumps(data))


def assert_same_outputs(loaded: LoadedModel, original: nn.Module, batches: tuple[int, ...] = (2, 3)) -> None:
    with torch.no_grad():
        for batch in batches:
            torch.testing.assert_close(loaded(clips(batch)), original(clips(batch)))


def assert_model_error(spec: str, *fragments: str) -> str:
    with pytest.raises(ModelError) as info:
        load_model(spec)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message
    return message


@pytest.fixture(scope="module")
def probe() -> nn.Module:
    return perturbed_probe()


# -- files: torch.export, TorchScript, sidecars ---------------------------------------------------------------

def test_exported_program_round_trip_with_dynamic_batch(tmp_path: Path, probe: nn.Module) -> None:
    program = torch.export.export(probe, (clips(2),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, tmp_path / "net.pt2")
    write_sidecar(tmp_path / "net.json", {"frames": 8, "size": [32, 32], "classes": ["a", "b", "c", "d"]})
    loaded = load_model(str(tmp_path / "net.pt2"))
    assert_same_outputs(loaded, probe)
    assert loaded.preprocessing.frames == 8 and loaded.preprocessing.size == (32, 32)
    assert loaded.num_classes == 4 and loaded.preprocessing.class_name(1) == "b"
    assert loaded.device == torch.device("cpu")


def test_torchscript_round_trip(tmp_path: Path, probe: nn.Module) -> None:
    torch.jit.save(torch.jit.trace(probe, clips(2)), tmp_path / "net.pt")
    loaded = load_model(str(tmp_path / "net.pt"))
    assert_same_outputs(loaded, probe)


def test_file_without_sidecar_uses_defaults_and_warns(tmp_path: Path, probe: nn.Module,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    torch.jit.save(torch.jit.trace(probe, clips(1)), tmp_path / "net.ts")
    with caplog.at_level(logging.WARNING, logger="aosa.engine.models.loading"):
        loaded = load_model(str(tmp_path / "net.ts"))
    assert loaded.preprocessing.classes == () and loaded.preprocessing.frames == 16
    assert [r.message.count("\n") for r in caplog.records] == [0] and "net.json" in caplog.text
    assert loaded.num_classes == 4  # from a dry run, as the file names no classes


def test_dry_run_that_fails_is_a_model_error(tmp_path: Path, probe: nn.Module) -> None:
    torch.export.save(torch.export.export(probe, (clips(1),)), tmp_path / "static.pt2")
    loaded = load_model(str(tmp_path / "static.pt2"))
    with pytest.raises(ModelError, match="dry run on a \\[1, 3, 16, 112, 112\\] batch failed"):
        loaded.num_classes


def test_sidecar_overrides_zoo_preprocessing_key_by_key(tmp_path: Path, probe: nn.Module) -> None:
    torch.save(probe.state_dict(), tmp_path / "weights.pth")
    write_sidecar(tmp_path / "weights.json", {"frames": 8, "classes": ["w", "x", "y", "z"]})
    preprocessing = load_model(f"probe3d={tmp_path / 'weights.pth'}").preprocessing
    zoo = ZOO["probe3d"].preprocessing
    assert (preprocessing.frames, preprocessing.classes) == (8, ("w", "x", "y", "z"))
    assert (preprocessing.size, preprocessing.mean, preprocessing.std) == (zoo.size, zoo.mean, zoo.std)


@pytest.mark.parametrize("text", ["{not json", '{"frames": 1}', '{"colour": true}', "[16]"])
def test_bad_sidecar_is_a_model_error_naming_it(tmp_path: Path, probe: nn.Module, text: str) -> None:
    torch.save(probe.state_dict(), tmp_path / "weights.pth")
    write_sidecar(tmp_path / "weights.json", text)
    assert_model_error(f"probe3d={tmp_path / 'weights.pth'}", str(tmp_path / "weights.json"))


# -- zoo ------------------------------------------------------------------------------------------------------

def test_seeded_builds_the_same_weights_and_leaves_the_global_rng_alone() -> None:
    def tiny(out_channels: int) -> nn.Module:
        return nn.Conv3d(3, out_channels, 3)

    rng = torch.get_rng_state()
    first, second = zoo._seeded(tiny, out_channels=4), zoo._seeded(tiny, out_channels=4)
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    with seeded(12345):  # the caller's seed does not reach the build
        assert torch.equal(zoo._seeded(tiny, out_channels=4).weight, first.weight)


@pytest.mark.parametrize("name", ["probe3d", "torchvision:mc3_18"])
def test_zoo_entries_build_through_the_seeded_helper(name: str) -> None:
    first, second = load_model(name).module.state_dict(), load_model(name).module.state_dict()
    assert first.keys() == second.keys() and all(torch.equal(first[key], second[key]) for key in first)


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_entries_carry_kinetics_metadata(name: str) -> None:
    weights = models.get_model_weights(name.removeprefix("torchvision:")).DEFAULT
    preprocessing = ZOO[name].preprocessing
    assert preprocessing.classes == tuple(weights.meta["categories"]) and len(preprocessing.classes) == 400
    side = 224 if name.endswith("s3d") else 112
    assert preprocessing.frames == 16 and preprocessing.size == (side, side)
    assert preprocessing.mean == pytest.approx((0.43216, 0.394666, 0.37645))


@pytest.mark.parametrize("name", [n for n in TORCHVISION if not n.endswith("s3d")])  # s3d needs 224px: ~3 s
def test_torchvision_forward_gives_400_logits(name: str) -> None:
    loaded = load_model(name)
    with torch.no_grad():
        assert loaded(clips(1, (3, 8, 64, 64))).shape == (1, 400)
    assert loaded.num_classes == 400 and not loaded.module.training


def test_probe3d_preprocessing_and_input_gradients() -> None:
    loaded = load_model("probe3d")
    assert loaded.preprocessing.classes == ("right", "left", "down", "up")
    assert (loaded.preprocessing.frames, loaded.preprocessing.size) == (16, (112, 112))
    assert (loaded.preprocessing.mean, loaded.preprocessing.std) == ((0.5,) * 3, (0.25,) * 3)
    clip = clips(1).requires_grad_()
    loaded(clip)[0, 0].backward()
    assert clip.grad is not None and clip.grad.abs().sum() > 0


# -- state dicts ----------------------------------------------------------------------------------------------

def test_state_dict_round_trip(tmp_path: Path, probe: nn.Module) -> None:
    torch.save(probe.state_dict(), tmp_path / "weights.pth")
    loaded = load_model(f"probe3d={tmp_path / 'weights.pth'}")
    assert_same_outputs(loaded, probe)
    with torch.no_grad():
        assert not torch.allclose(loaded(clips(2)), load_model("probe3d")(clips(2)))


@pytest.mark.parametrize("key", ["state_dict", "model"])
def test_wrapped_state_dict_with_module_prefix_loads(tmp_path: Path, probe: nn.Module, key: str) -> None:
    checkpoint = {key: {f"module.{k}": v for k, v in probe.state_dict().items()}, "epoch": 3}
    torch.save(checkpoint, tmp_path / "ckpt.pth")
    assert_same_outputs(load_model(f"probe3d={tmp_path / 'ckpt.pth'}"), probe, batches=(2,))


def test_full_pickled_module_is_refused(tmp_path: Path, probe: nn.Module) -> None:
    torch.save(probe, tmp_path / "full.pth")
    assert_model_error(f"probe3d={tmp_path / 'full.pth'}", str(tmp_path / "full.pth"),
                       "a full pickle is refused for safety; save a state_dict")


def test_mismatched_state_dict_names_file_and_keys(tmp_path: Path) -> None:
    state = ZOO["probe3d"].builder().state_dict()
    state["fc.weight"] = torch.zeros(5, 64)
    state["extra.bias"] = state.pop("fc.bias")
    torch.save(state, tmp_path / "other.pth")
    assert_model_error(f"probe3d={tmp_path / 'other.pth'}", str(tmp_path / "other.pth"),
                       "missing fc.bias", "unexpected extra.bias", "wrong shape fc.weight [5, 64] vs [4, 64]")


def test_other_architectures_weights_are_listed_briefly(tmp_path: Path) -> None:
    torch.save(ZOO["probe3d"].builder().state_dict(), tmp_path / "probe.pth")
    message = assert_model_error(f"torchvision:r3d_18={tmp_path / 'probe.pth'}", "does not fit torchvision:r3d_18")
    assert "more" in message and len(message) < 600


def test_checkpoint_without_tensors_is_refused(tmp_path: Path) -> None:
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    assert_model_error(f"probe3d={tmp_path / 'meta.pth'}", "holds no state dict")


# -- bad specs, bad files, devices ----------------------------------------------------------------------------

FORMS = {"weights": "probe3d={}", "export": "{}", "torchscript": "{}"}
SUFFIX = {"weights": ".pth", "export": ".pt2", "torchscript": ".pt"}
CONTENT = {"empty": b"", "garbage": bytes(range(256)) * 8, "text": b"hello, this is not a model\n"}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("content", ["missing", *CONTENT])
def test_bad_model_files_are_one_line_errors_naming_the_file(tmp_path: Path, form: str, content: str) -> None:
    path = tmp_path / f"model{SUFFIX[form]}"
    if content != "missing":
        path.write_bytes(CONTENT[content])
    expected = {"missing": "not found", "empty": "empty"}.get(content, "not a ")
    assert_model_error(FORMS[form].format(path), str(path), expected)


@pytest.mark.parametrize("spec", ["resnet", "torchvision:r3d_50", "weights.pth", "nope=weights.pth"])
def test_unknown_spec_lists_known_names_and_file_forms(spec: str) -> None:
    assert_model_error(spec, "unknown model", "probe3d", "torchvision:r3d_18", ".pt2", "NAME=WEIGHTS.pth")


def test_equals_sign_in_a_path_is_not_a_weights_spec(tmp_path: Path, probe: nn.Module) -> None:
    folder = tmp_path / "run_id=7"
    folder.mkdir()
    torch.jit.save(torch.jit.trace(probe, clips(1)), folder / "net.pt")
    assert_same_outputs(load_model(str(folder / "net.pt")), probe, batches=(2,))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_a_clear_error(device: str) -> None:
    with pytest.raises(ModelError, match="CUDA is not available"):
        load_model("probe3d", device)


@pytest.mark.parametrize("device", ["tpu", "gpu0"])
def test_unknown_device_is_a_model_error(device: str) -> None:
    with pytest.raises(ModelError, match="use cpu, cuda, cuda:N or auto"):
        load_model("probe3d", device)


def test_auto_device_picks_cuda_only_when_available() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert load_model("probe3d", "auto").device.type == expected


# Every zoo entry marked channels-last, with a small clip it accepts; the full-size ones are slow.
CHANNELS_LAST_CLIPS = {
    "probe3d": SMALL, "probe": SMALL, "probe:motion": SMALL, "probe:appearance": SMALL,
    "torchvision:r3d_18": (3, 8, 64, 64), "torchvision:mc3_18": (3, 8, 64, 64),
    "torchvision:r2plus1d_18": (3, 8, 64, 64), "hara:r3d_50": (3, 8, 64, 64), "hara:r2plus1d_50": (3, 8, 64, 64),
    "pytorchvideo:x3d_xs": (3, 4, 160, 160),
}
CHANNELS_LAST_SLOW = {"torchvision:s3d": (3, 16, 224, 224), "pytorchvideo:slowfast_r50": (3, 32, 224, 224),
                      "pytorchvideo:x3d_s": (3, 13, 160, 160), "pytorchvideo:x3d_m": (3, 16, 224, 224)}


def test_every_channels_last_zoo_entry_is_checked_and_transformers_are_not_marked() -> None:
    marked = {name for name, entry in ZOO.items() if entry.channels_last}
    assert marked == set(CHANNELS_LAST_CLIPS) | set(CHANNELS_LAST_SLOW)
    assert not {"torchvision:mvit_v1_b", "torchvision:mvit_v2_s", "torchvision:swin3d_t"} & marked


@pytest.mark.parametrize("name", [*CHANNELS_LAST_CLIPS, *(pytest.param(name, marks=pytest.mark.slow)
                                                           for name in CHANNELS_LAST_SLOW)])
def test_channels_last_batches_give_the_contiguous_logits(name: str) -> None:
    """A zoo CNN asks for channels-last batches on a CPU (oneDNN runs them faster) and scores them as it scores
    contiguous ones, to float rounding (the convolutions sum in another order)."""
    if name.startswith("pytorchvideo:"):
        pytest.importorskip("pytorchvideo.models.hub")
    loaded = load_model(name)
    assert loaded.batch_format == torch.channels_last_3d
    batch = clips(2, {**CHANNELS_LAST_CLIPS, **CHANNELS_LAST_SLOW}[name])
    with torch.no_grad():
        contiguous, channels_last = loaded(batch), loaded(batch.contiguous(memory_format=torch.channels_last_3d))
    torch.testing.assert_close(channels_last, contiguous, rtol=1e-4, atol=1e-5)


def test_models_without_a_channels_last_mark_or_compiled_take_contiguous_batches(tmp_path: Path,
                                                                                probe: nn.Module) -> None:
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(probe, clips(1)), path)
    assert load_model(str(path)).batch_format == torch.contiguous_format  # a file: nothing says it is a CNN
    compiled = load_model("probe3d")
    compiled.compiled = compiled.module
    assert compiled.batch_format == torch.contiguous_format  # engines were not measured
