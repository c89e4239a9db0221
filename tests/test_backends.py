"""Backend selection on a machine without a GPU: auto picks eager, TensorRT fails in one line, and
torch_tensorrt is never imported; `aosa doctor` says why each missing backend is missing."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aosa.engine.errors import ConfigError
from torch._dynamo.utils import counters

from aosa.engine.models.backends import Backend, resolve_backend, tensorrt_unavailable, use_backend
from aosa.engine.models.loading import load_model
from aosa.jobs.explain import main as explain
from aosa.jobs.gpu_check import main as gpu_check
from tests.videos import moving_square, write_video

REPO = Path(__file__).resolve().parents[1]


def test_auto_is_eager_and_tensorrt_is_refused_without_cuda():
    cpu = torch.device("cpu")
    assert resolve_backend("auto", cpu) == "eager" and resolve_backend("eager", cpu) == "eager"
    with pytest.raises(ConfigError, match="backend 'tensorrt' is not available: TensorRT needs a CUDA device"):
        resolve_backend("tensorrt", cpu)
    expected = "torch-tensorrt is not installed" if torch.cuda.is_available() else "CUDA is not available"
    assert (tensorrt_unavailable(torch.device("cuda")) or expected).startswith(expected)  # None: it can run here
    with pytest.raises(ConfigError, match="unknown backend 'onnx'"):
        resolve_backend("onnx", cpu)
    for tf32 in ("eager-tf32", "compile-tf32"):
        with pytest.raises(ConfigError, match=f"'{tf32}' needs a CUDA device"):
            resolve_backend(tf32, cpu)
    assert resolve_backend("eager-bf16", cpu) == "eager-bf16" and resolve_backend("compile", cpu) == "compile"


def test_backend_names_split_into_runner_and_precision():
    assert Backend.parse("eager") == Backend("eager", "fp32")
    assert Backend.parse("compile-bf16") == Backend("compile", "bf16")
    assert Backend.parse("tensorrt") == Backend("tensorrt", "fp16")
    assert Backend.parse("tensorrt").module_precision == "fp32"  # its gradients run the fp32 module
    with pytest.raises(ConfigError, match="unknown backend 'auto'"):
        Backend.parse("auto")  # resolved by resolve_backend first


def test_reduced_precision_runs_under_autocast_and_returns_float32_logits(tmp_path):
    fp32, bf16 = load_model("probe3d", "cpu"), load_model("probe3d", "cpu")
    assert use_backend(bf16, "eager-bf16", 4, tmp_path) == "eager-bf16" and bf16.precision == "bf16"
    clip = torch.randn(2, 3, 16, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact, reduced = fp32(clip), bf16(clip)
    assert reduced.dtype == torch.float32 and not torch.equal(exact, reduced)  # bf16 arithmetic really ran
    assert torch.allclose(torch.softmax(exact, 1), torch.softmax(reduced, 1), atol=0.05)
    x = clip[:1].clone().requires_grad_(True)
    bf16(x)[0, 0].backward()  # gradients flow through autocast too
    assert x.grad is not None and x.grad.dtype == torch.float32


@pytest.mark.slow
def test_compile_backend_runs_on_the_cpu_and_matches_eager(tmp_path):
    """torch.compile's inductor compiles C++ here; the first-use check compares it with eager."""
    model, eager = load_model("probe3d", "cpu"), load_model("probe3d", "cpu")
    assert use_backend(model, "compile", 4, tmp_path) == "compile" and model.compiled is not None
    clip = torch.randn(7, 3, 16, 112, 112, generator=torch.Generator().manual_seed(1))
    counters["stats"].clear()
    with torch.no_grad():
        for size in (7, 1, 3):  # one graph serves every batch size, a single clip included
            assert torch.allclose(model(clip[:size]), eager(clip[:size]), atol=1e-4)
    assert counters["stats"]["unique_graphs"] == 0  # compiled once, by the first-use check


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_eager_is_fp32_on_cuda_and_eager_tf32_is_not(tmp_path, fp32_cuda):
    """(`fp32_cuda` puts the process-wide flags back afterwards.)"""
    model = load_model("probe3d", "cuda")
    for backend, tf32 in (("eager-tf32", True), ("eager", False)):
        assert use_backend(model, backend, 4, tmp_path) == backend
        assert torch.backends.cudnn.allow_tf32 is tf32 and torch.backends.cuda.matmul.allow_tf32 is tf32
    with model.precision_context():  # per call: a tf32 model's passes run in TF32 whatever the process flags say
        assert torch.backends.cudnn.allow_tf32 is False
    model.precision = "tf32"
    with model.precision_context():
        assert torch.backends.cudnn.allow_tf32 is True
    assert torch.backends.cudnn.allow_tf32 is False  # restored after


def test_explain_with_tensorrt_on_cpu_is_one_line_and_never_imports_torch_tensorrt(tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", moving_square(16, 64, 64))
    code = explain([str(video), "--model", "probe3d", "--backend", "tensorrt", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "backend 'tensorrt' is not available" in err[0]
    assert "torch_tensorrt" not in sys.modules


def test_compiled_engine_serves_only_gradient_free_passes():
    model = load_model("probe3d", "cpu")
    calls = []
    model.compiled = lambda batch: calls.append(batch.shape[0]) or torch.zeros(batch.shape[0], 4)
    clip = torch.randn(2, 3, 16, 112, 112)
    with torch.no_grad():
        assert torch.equal(model(clip), torch.zeros(2, 4))
    x = clip[:1].clone().requires_grad_(True)
    model(x)[0, 0].backward()  # the gradient path runs the eager module
    assert calls == [2] and x.grad is not None


def test_doctor_reports_backends_and_reasons():
    result = subprocess.run([sys.executable, "-m", "aosa.jobs.doctor"], cwd=REPO, capture_output=True, text=True)
    lines = dict(re.match(r"(.+?)\s{2,}(.*)", line).groups() for line in result.stdout.splitlines())
    assert result.returncode == 0
    assert lines["backend eager"] == "available"
    assert lines["backend tensorrt"] == (tensorrt_unavailable(torch.device("cuda")) or "available")
    assert lines["precision tf32"].startswith("available") == torch.cuda.is_available()
    assert lines["precision fp32"] == "available (exact)" and lines["backend compile"].startswith("available")
    assert "APPROXIMATE" in lines["precision bf16"] and "faithful" in lines["precision fp16"]  # measured: 0.979, 0.999
    assert "no CUDA" in lines["flow farneback-cuda"]
    assert lines["decoder pyav"].startswith("available") and "h264" in lines["decoder pyav"]


def test_help_labels_a_precision_whose_maps_fall_below_the_bar(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps to the terminal, and may break a line at a hyphen
    with pytest.raises(SystemExit):
        explain(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "bf16 APPROXIMATE: maps rank-correlate 0.9791 with fp32" in text and "fp32 exact" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_gpu_check_skips_everything_without_a_gpu(capsys):
    assert gpu_check([]) == 0 and "every GPU check skipped" in capsys.readouterr().out
    assert gpu_check(["--require-gpu"]) == 1
