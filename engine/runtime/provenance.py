"""What produced a run's numbers, recorded with it: the code's git commit and the versions of the packages."""

from __future__ import annotations

import subprocess
from importlib.metadata import version
from pathlib import Path

VERSIONED_PACKAGES = ("aosa-engine", "torch", "torchvision", "opencv-contrib-python-headless", "av", "ray", "captum",
                      "numpy")


def git_sha() -> str | None:
    """The commit of the code that ran, when it runs from a git checkout."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                                text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour changes the numbers."""
    versions = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except Exception:  # not installed under that distribution name
            versions[name] = "missing"
    return versions
