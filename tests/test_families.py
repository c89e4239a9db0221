"""The paper's model families: Hara's ResNet-50 R3D / R(2+1)D and torchvision MViT / Swin3D, each loaded from
a checkpoint in its original layout."""

from __future__ import annotations

import warnings
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest
import torch
from torch import nn
from torchvision import models

from aosa.engine.errors import ModelError
from aosa.engine.models.loading import load_model
from aosa.engine.models.zoo import ZOO
from aosa.kernels.methods import get_method
from aosa.kernels.space import InputSpace
from aosa.schemas.method_params import MethodParams

HARA = {"hara:r3d_50": "resnet-50", "hara:r2plus1d_50": "resnet2p1d-50"}  # zoo name -> arch in Hara's checkpoints
HARA_CLIP = (1, 3, 8, 64, 64)
HARA_MEAN, HARA_STD = (0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737)
R3D50_PARAMS_700 = 47_633_276  # counted here; the same layout as the original repository's code (see report)
R2PLUS1D50_PARAMS_700 = 47_650_082


def clip(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


@cache
def hara_model(name: str, num_classes: int) -> nn.Module:
    """A zoo Hara net whose BatchNorm statistics are perturbed, so a misplaced tensor changes the output."""
    module = ZOO[name].builder(num_classes=num_classes).eval()
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if key.endswith(("running_mean", "running_var", "bn3.weight")):
                tensor.mul_(0.5).add_(torch.rand_like(tensor))
    return module


def hara_checkpoint(path: Path, module: nn.Module, arch: str, prefix: str = "") -> Path:
    """What Hara's main.py save_checkpoint writes; `prefix` "module." is the older DataParallel layout."""
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [50, 100, 150])
    torch.save({"epoch": 3, "arch": arch, "state_dict": {prefix + k: v for k, v in module.state_dict().items()},
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, path)
    return path


# -- Hara et al. ----------------------------------------------------------------------------------------------

def test_hara_r3d50_layout_and_parameter_count() -> None:
    state = hara_model("hara:r3d_50", 700).state_dict()
    shapes = {key: tuple(state[key].shape) for key in state}
    assert shapes["conv1.weight"] == (64, 3, 7, 7, 7) and shapes["bn1.running_mean"] == (64,)
    assert shapes["layer1.0.conv2.weight"] == (64, 64, 3, 3, 3)
    assert shapes["layer1.0.downsample.0.weight"] == (256, 64, 1, 1, 1) and "layer1.1.downsample.0.weight" not in state
    assert shapes["layer4.2.conv3.weight"] == (2048, 512, 1, 1, 1) and shapes["fc.weight"] == (700, 2048)
    assert sum(p.numel() for p in hara_model("hara:r3d_50", 700).parameters()) == R3D50_PARAMS_700


def test_hara_r2plus1d50_layout_and_parameter_count() -> None:
    state = hara_model("hara:r2plus1d_50", 700).state_dict()
    shapes = {key: tuple(state[key].shape) for key in state}
    assert shapes["conv1_s.weight"] == (110, 3, 1, 7, 7) and shapes["conv1_t.weight"] == (64, 110, 7, 1, 1)
    assert shapes["bn1_s.weight"] == (110,) and shapes["bn1_t.weight"] == (64,)
    assert shapes["layer1.0.conv2_s.weight"] == (144, 64, 1, 3, 3)
    assert shapes["layer1.0.conv2_t.weight"] == (64, 144, 3, 1, 1)
    assert shapes["layer2.0.conv2_s.weight"] == (288, 128, 1, 3, 3) and shapes["layer2.0.bn2_t.running_var"] == (128,)
    assert shapes["layer4.2.conv3.weight"] == (2048, 512, 1, 1, 1) and shapes["fc.weight"] == (700, 2048)
    assert "conv1.weight" not in state and "layer1.0.conv2.weight" not in state
    assert sum(p.numel() for p in hara_model("hara:r2plus1d_50", 700).parameters()) == R2PLUS1D50_PARAMS_700


@pytest.mark.parametrize(("name", "num_classes", "prefix"), [
    ("hara:r3d_50", 700, "module."), ("hara:r3d_50", 101, ""), ("hara:r2plus1d_50", 101, "module."),
])
def test_hara_checkpoint_loads_with_its_class_count(tmp_path: Path, name: str, num_classes: int, prefix: str) -> None:
    original = hara_model(name, num_classes)
    path = hara_checkpoint(tmp_path / "save_200.pth", original, HARA[name], prefix)
    loaded = load_model(f"{name}={path}")
    with torch.no_grad():
        expected, actual = original(clip(HARA_CLIP)), loaded(clip(HARA_CLIP))
    assert actual.shape == (1, num_classes) and loaded.module.fc.out_features == num_classes
    torch.testing.assert_close(actual, expected, rtol=0, atol=1e-5)
    assert not loaded.module.training


def test_hara_checkpoint_of_another_arch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "save_10.pth"
    torch.save({"epoch": 10, "arch": "resnet2p1d-50", "state_dict": {"fc.weight": torch.zeros(101, 2048)}}, path)
    with pytest.raises(ModelError, match=r"records arch 'resnet2p1d-50'; hara:r3d_50 loads 'resnet-50' checkpoints"):
        load_model(f"hara:r3d_50={path}")


def test_hara_state_dict_without_a_head_reports_the_misfit(tmp_path: Path) -> None:
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 7, 7)}, tmp_path / "partial.pth")
    with pytest.raises(ModelError, match=r"does not fit hara:r3d_50: missing bn1\.weight.*wrong shape conv1\.weight"):
        load_model(f"hara:r3d_50={tmp_path / 'partial.pth'}")


@pytest.mark.parametrize("name", HARA)
def test_hara_preprocessing(name: str) -> None:
    preprocessing = ZOO[name].preprocessing
    assert (preprocessing.frames, preprocessing.size) == (16, (112, 112))
    assert (preprocessing.mean, preprocessing.std) == (HARA_MEAN, HARA_STD) and preprocessing.classes == ()
    assert ZOO[name].builder().fc.out_features == 700


# -- torchvision MViT and Swin3D ------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "frames", "mean"), [
    ("mvit_v1_b", 16, (0.45,) * 3), ("mvit_v2_s", 16, (0.45,) * 3), ("swin3d_t", 32, (0.485, 0.456, 0.406)),
])
def test_torchvision_transformer_preprocessing(name: str, frames: int, mean: tuple[float, ...]) -> None:
    weights = models.get_model_weights(name).DEFAULT
    preprocessing = ZOO[f"torchvision:{name}"].preprocessing
    assert preprocessing.frames == frames >= weights.meta["min_temporal_size"] and preprocessing.size == (224, 224)
    assert preprocessing.mean == pytest.approx(mean) and preprocessing.classes == tuple(weights.meta["categories"])
    assert len(preprocessing.classes) == 400


@pytest.mark.slow  # a full-size model
@pytest.mark.parametrize("name", ["mvit_v1_b", "mvit_v2_s"])
def test_mvit_state_dict_round_trip(tmp_path: Path, name: str) -> None:
    """MViT takes exactly its 16x224x224 clip (~10 s a forward here): the loaded tensors are compared exactly
    and the one forward runs on the clip the preprocessing describes."""
    original = ZOO[f"torchvision:{name}"].builder()
    with torch.no_grad():
        for tensor in original.parameters():
            tensor.add_(0.01)
    torch.save(original.state_dict(), tmp_path / f"{name}.pth")
    loaded = load_model(f"torchvision:{name}={tmp_path / f'{name}.pth'}")
    state = loaded.module.state_dict()
    assert state.keys() == original.state_dict().keys()
    assert all(torch.equal(state[key], value) for key, value in original.state_dict().items())
    preprocessing = loaded.preprocessing
    with torch.no_grad():
        assert loaded(clip((1, 3, preprocessing.frames, *preprocessing.size))).shape == (1, 400)


@pytest.mark.slow  # a full-size model
def test_swin3d_state_dict_round_trip(tmp_path: Path) -> None:
    original = ZOO["torchvision:swin3d_t"].builder().eval()
    with torch.no_grad():
        for tensor in original.parameters():
            tensor.add_(0.01)
    torch.save(original.state_dict(), tmp_path / "swin3d_t.pth")
    loaded = load_model(f"torchvision:swin3d_t={tmp_path / 'swin3d_t.pth'}")
    small = clip((1, 3, 4, 64, 64))  # Swin3D pads to its windows, so a small clip is valid
    with torch.no_grad():
        torch.testing.assert_close(loaded(small), original(small), rtol=0, atol=1e-5)


# -- PyTorchVideo SlowFast and X3D (optional extra) -----------------------------------------------------------

def pysf_checkpoint(path: Path, module: nn.Module) -> Path:
    """What PySlowFast's checkpoint.save_checkpoint writes (the files PyTorchVideo's model zoo serves)."""
    torch.save({"epoch": 196, "model_state": module.state_dict(), "optimizer_state": {},
                "cfg": "MODEL:\n  ARCH: slowfast\n"}, path)
    return path


def pytorchvideo_hub() -> ModuleType:
    """PyTorchVideo's model builders; the tests skip where the optional extra is not installed."""
    with warnings.catch_warnings():  # its import scripts functions through a deprecated torch.jit
        warnings.simplefilter("ignore", FutureWarning)
        return pytest.importorskip("pytorchvideo.models.hub")


def perturbed(module: nn.Module) -> nn.Module:
    """Eval-mode `module` with shifted BatchNorm statistics, so a misplaced tensor changes the output."""
    with torch.no_grad():
        for key, tensor in module.state_dict().items():
            if key.endswith(("running_mean", "running_var")):
                tensor.mul_(0.5).add_(torch.rand_like(tensor))
    return module.eval()


@pytest.mark.slow  # a full-size model
def test_slowfast_loads_a_pytorchvideo_checkpoint_and_packs_its_pathways(tmp_path: Path) -> None:
    """The reference is PyTorchVideo's own net called its own way: [slow, fast] from PackPathway (alpha 4)."""
    hub = pytorchvideo_hub()
    reference = perturbed(hub.slowfast_r50(pretrained=False))
    loaded = load_model(f"pytorchvideo:slowfast_r50={pysf_checkpoint(tmp_path / 'SLOWFAST_8x8_R50.pyth', reference)}")
    fast = clip((1, 3, 32, 224, 224))
    slow = torch.index_select(fast, 2, torch.linspace(0, 31, 8).long())
    with torch.no_grad():
        torch.testing.assert_close(loaded(fast), reference([slow, fast]), rtol=0, atol=1e-5)
    assert loaded.preprocessing.frames == 32 and loaded.preprocessing.size == (256, 256)
    assert loaded.preprocessing.classes == tuple(models.video.R3D_18_Weights.DEFAULT.meta["categories"])


@pytest.mark.parametrize(("name", "frames", "crop", "built_for"), [
    ("x3d_xs", 4, 182, 160), ("x3d_s", 13, 182, 160), ("x3d_m", 16, 256, 224),
])
@pytest.mark.slow  # a full-size model
def test_x3d_round_trip_from_a_pytorchvideo_checkpoint(tmp_path: Path, name: str, frames: int, crop: int,
                                                       built_for: int) -> None:
    hub = pytorchvideo_hub()
    reference = perturbed(getattr(hub, name)(pretrained=False))
    loaded = load_model(f"pytorchvideo:{name}={pysf_checkpoint(tmp_path / f'{name.upper()}.pyth', reference)}")
    assert (loaded.preprocessing.frames, loaded.preprocessing.size) == (frames, (crop, crop))
    small = clip((1, 3, frames, built_for, built_for))  # the crop the hub net's head pool is sized for
    with torch.no_grad():
        torch.testing.assert_close(loaded(small), reference(small), rtol=0, atol=1e-5)


def test_x3d_fine_tuned_head_sets_the_class_count_and_drops_kinetics_names(tmp_path: Path) -> None:
    hub = pytorchvideo_hub()
    reference = perturbed(hub.x3d_xs(pretrained=False, model_num_class=101))
    loaded = load_model(f"pytorchvideo:x3d_xs={pysf_checkpoint(tmp_path / 'ucf101.pyth', reference)}")
    with torch.no_grad():
        assert loaded(clip((1, 3, 4, 160, 160))).shape == (1, 101)
    assert loaded.preprocessing.classes == () and loaded.num_classes == 101


def test_pytorchvideo_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    hub = pytorchvideo_hub()
    path = pysf_checkpoint(tmp_path / "X3D_XS.pyth", hub.x3d_xs(pretrained=False))
    with pytest.raises(ModelError, match=r"does not fit pytorchvideo:slowfast_r50: missing blocks\.0\.multipathway"):
        load_model(f"pytorchvideo:slowfast_r50={path}")


@pytest.mark.parametrize("method", ["aosa-approx", "gradcam"])
def test_methods_explain_a_pytorchvideo_net(method: str) -> None:
    """Occlusion and Grad-CAM see X3D as any (B, C, T, H, W) classifier: maps of the clip's shape."""
    pytorchvideo_hub()
    loaded = load_model("pytorchvideo:x3d_xs")
    preprocessing = loaded.preprocessing
    space = InputSpace(preprocessing.mean, preprocessing.std)
    frames = clip((3, 4, 160, 160))
    still = torch.zeros(3, 160, 160, 2)  # flow of a static clip: every tube is a cuboid
    saliency = get_method(method)(loaded, MethodParams(), space).attribute(frames, target=0, flow=still)
    assert saliency.shape == (4, 160, 160) and torch.isfinite(saliency).all() and saliency.abs().sum() > 0
