"""How a model wants its clip: frame count, size, normalization and class names (the sidecar JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class PreprocessingError(ValueError):
    """A preprocessing description (sidecar JSON or dict) is malformed."""


@dataclass(frozen=True)
class Preprocessing:
    """Model-input geometry and normalization; `classes` may be empty when unknown."""

    frames: int = 16
    size: tuple[int, int] = (112, 112)
    mean: tuple[float, float, float] = (0.43216, 0.394666, 0.37645)
    std: tuple[float, float, float] = (0.22803, 0.22145, 0.216989)
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise PreprocessingError(f"frames must be at least 2, got {self.frames}")
        if len(self.size) != 2 or min(self.size) < 8:
            raise PreprocessingError(f"size must be [height, width], each at least 8, got {list(self.size)}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise PreprocessingError("mean and std must have 3 values (RGB)")
        if min(self.std) <= 0:
            raise PreprocessingError(f"std values must be positive, got {list(self.std)}")

    @property
    def height(self) -> int:
        return self.size[0]

    @property
    def width(self) -> int:
        return self.size[1]

    def class_name(self, index: int) -> str:
        """Name of class `index`, or its number when the model ships no class list."""
        return self.classes[index] if 0 <= index < len(self.classes) else str(index)

    def to_dict(self) -> dict[str, Any]:
        return {"frames": self.frames, "size": list(self.size), "mean": list(self.mean),
                "std": list(self.std), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], defaults: Preprocessing | None = None) -> Preprocessing:
        """Build from a JSON-like dict; keys that are missing come from `defaults`."""
        base = (defaults or cls()).to_dict()
        unknown = set(data) - set(base)
        if unknown:
            raise PreprocessingError(f"unknown keys {sorted(unknown)}; expected some of {sorted(base)}")
        merged = {**base, **data}
        try:
            size = merged["size"]
            if isinstance(size, int):
                size = [size, size]
            return cls(frames=int(merged["frames"]), size=(int(size[0]), int(size[1])),
                       mean=tuple(float(v) for v in merged["mean"]),
                       std=tuple(float(v) for v in merged["std"]),
                       classes=tuple(str(c) for c in merged["classes"]))
        except (TypeError, ValueError, IndexError, KeyError) as exc:
            if isinstance(exc, PreprocessingError):
                raise
            raise PreprocessingError(f"bad value: {exc}") from None

    @classmethod
    def from_json(cls, path: Path, defaults: Preprocessing | None = None) -> Preprocessing:
        """Read a sidecar JSON file; errors name the file."""
        try:
            data = json.loads(Path(path).read_text())
            if not isinstance(data, dict):
                raise PreprocessingError("top level must be a JSON object")
            return cls.from_dict(data, defaults)
        except json.JSONDecodeError as exc:
            raise PreprocessingError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except PreprocessingError as exc:
            raise PreprocessingError(f"{path}: {exc}") from None
