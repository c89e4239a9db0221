"""One import name: installed, the project adds only `aosa` to site-packages, and Hugging Face's `kernels` (which
transformers needs from 5.25) imports beside it, also from the repository root."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def tracked_copy(destination: Path) -> Path:
    """The repository's tracked files (what a clone holds), copied so a build writes nothing into the checkout."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / name).is_file():
            shutil.copy2(REPO / name, target)
    return destination


@pytest.mark.slow
def test_install_adds_one_top_level_name(tmp_path: Path) -> None:
    source = tracked_copy(tmp_path / "source")
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(site), str(source)], check=True, capture_output=True)
    assert sorted(path.name for path in site.iterdir() if not path.name.endswith(".dist-info")) == ["aosa", "bin"]
    assert sorted(path.name for path in (site / "aosa").iterdir()) == ["engine", "jobs", "kernels", "schemas"]
    assert (site / "aosa" / "engine" / "models" / "weights" / "probe.pth").is_file()
    assert (site / "aosa" / "schemas" / "regression_rules.json").is_file()
    served = site / "aosa" / "engine" / "serve"  # aosa serve's pages, script and style ship built in the package
    assert {"base.html", "video.html"} <= {path.name for path in (served / "templates").iterdir()}
    assert {"player.js", "style.css"} <= {path.name for path in (served / "static").iterdir()}
    probe = "import aosa.jobs.cli, aosa.kernels.methods as m; print(m.__file__)"
    printed = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True,
                             env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout
    assert printed.startswith(str(site))


def test_hugging_face_kernels_imports_beside_the_project_from_the_repository_root() -> None:
    pytest.importorskip("kernels")
    probe = ("import kernels, aosa.kernels.methods, transformers.integrations.hub_kernels as hub; "
             "assert callable(kernels.get_kernel), kernels.__file__; "
             "assert 'site-packages' in kernels.__file__, kernels.__file__; "
             "assert aosa.kernels.methods.get_method('aosa'); print(kernels.__file__)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
