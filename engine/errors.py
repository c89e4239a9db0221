"""Errors that describe one bad input in one line; `kind` is a stable machine-readable category."""

from __future__ import annotations


class AosaError(Exception):
    """Base of every expected failure; the message is one readable line."""

    kind = "error"


class VideoError(AosaError):
    """A video cannot be read or does not hold the clip asked for."""

    def __init__(self, path: object, problem: str, kind: str = "video") -> None:
        super().__init__(f"{path}: {problem}")
        self.kind = kind


class ModelError(AosaError):
    """A model spec cannot be resolved or a model file does not load."""

    kind = "model"


class MapError(AosaError):
    """A method produced a map that cannot be scored (NaN or infinite values)."""

    kind = "non_finite_map"


class ConfigError(AosaError):
    """An option or parameter is invalid."""

    kind = "config"


class StoreError(AosaError):
    """The result store's files are inconsistent or cannot be written; the message names the file."""

    kind = "store"


SHOWN_KEYS = 3


def short_reason(exc: BaseException) -> str:
    """Exception type and first sentence, so a library's long multi-line errors stay one short line."""
    sentence = str(exc).strip().split("\n")[0].split(". ")[0].rstrip(".")
    return f"{type(exc).__name__}: {sentence}" if sentence else type(exc).__name__


def shown_keys(keys: list[str]) -> str:
    """The first few keys and how many more there are."""
    more = f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more
