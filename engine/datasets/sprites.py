"""The synthetic benchmark's objects (DESIGN.md section 6): a sprite is pixels plus the mask they cover.

Two kinds: `textured_sprite`, a square or disc with a smooth brightness texture (the motion task's objects,
all alike), and `patterned_sprite`, one of the LOOKS (the appearance task's classes). The looks differ in
shape and grey two-tone pattern only: the tones sit symmetrically about the object's colour with a random
polarity and average to that colour over the mask, so no single pixel and no mean colour tells them apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SIDE = (14, 20)  # object side in px, inclusive
CELL = (3, 4)  # checker / stripe cell side in px, inclusive
CONTRAST = 0.15  # a look's two tones lie this far either side of its colour (0-1 scale)


@dataclass(frozen=True)
class Sprite:
    """One object's look: uint8 (h,w,3) pixels and the (h,w) bool mask of the pixels it covers."""

    pixels: np.ndarray
    mask: np.ndarray


def smooth(rng: np.random.Generator, height: int, width: int, cell: int, channels: int = 3) -> np.ndarray:
    """float (height,width,channels) in [0,1]: random values every `cell` px, bilinearly interpolated."""
    grid = rng.random((height // cell + 2, width // cell + 2, channels))
    for axis, length in ((0, height), (1, width)):
        position = np.arange(length) / cell
        low = np.minimum(position.astype(int), grid.shape[axis] - 2)
        weight = np.expand_dims(position - low, axis=tuple(a for a in range(3) if a != axis))
        grid = np.take(grid, low, axis=axis) * (1 - weight) + np.take(grid, low + 1, axis=axis) * weight
    return grid


def to_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in [0,1] as uint8, kept off the extremes 0 and 255."""
    return np.rint(np.clip(values, 0.04, 0.96) * 255).astype(np.uint8)


def _disc(side: int, radius: float) -> np.ndarray:
    """(side,side) bool: the pixels within `radius` of the centre."""
    centre = (side - 1) / 2
    rows, cols = np.ogrid[:side, :side]
    return (rows - centre) ** 2 + (cols - centre) ** 2 <= radius ** 2


def textured_sprite(rng: np.random.Generator, palette: np.ndarray) -> Sprite:
    """A square or disc, 14-20 px, coloured near `palette`, with its own brightness texture."""
    side = int(rng.integers(SIDE[0], SIDE[1] + 1))
    colour = palette + rng.normal(0, 0.05, 3)
    texture = smooth(rng, side, side, cell=int(rng.integers(3, 6)), channels=1) - 0.5
    pixels = to_uint8(colour + 0.5 * texture)
    if rng.random() < 0.5:
        return Sprite(pixels, np.ones((side, side), dtype=bool))
    return Sprite(pixels, _disc(side, side / 2))


def _checker(side: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """A square of cell x cell checks."""
    rows, cols = np.indices((side, side)) // cell
    return np.ones((side, side), dtype=bool), (rows + cols) % 2 == 1


def _stripes(side: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """A square of horizontal stripes, each `cell` px high."""
    return np.ones((side, side), dtype=bool), np.indices((side, side))[0] // cell % 2 == 1


def _ring(side: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """A disc with a hole half its width, in an outer and an inner band of equal area."""
    outer, inner = side / 2, side / 4
    return _disc(side, outer) & ~_disc(side, inner), ~_disc(side, np.sqrt((outer ** 2 + inner ** 2) / 2))


def _cross(side: int, cell: int) -> tuple[np.ndarray, np.ndarray]:
    """A plus whose arms are a third of the side wide, in cell x cell checks."""
    bar = np.abs(np.arange(side) - (side - 1) / 2) < side / 6
    return bar[:, None] | bar[None, :], _checker(side, cell)[1]


# Class name -> (side, cell) -> (mask, which pixels take the second tone), in the appearance probe's order.
LOOKS: dict[str, Callable[[int, int], tuple[np.ndarray, np.ndarray]]] = {
    "checker": _checker, "stripes": _stripes, "ring": _ring, "cross": _cross}


def patterned_sprite(rng: np.random.Generator, palette: np.ndarray, look: str) -> Sprite:
    """A 14-20 px sprite of `look` in two grey tones about a colour near `palette`; the tones average
    exactly to that colour over the mask and swap places at random."""
    side = int(rng.integers(SIDE[0], SIDE[1] + 1))
    mask, second = LOOKS[look](side, int(rng.integers(CELL[0], CELL[1] + 1)))
    tone = np.where(second, 1.0, -1.0)
    tone -= tone[mask].mean()
    colour = palette + rng.normal(0, 0.05, 3)
    polarity = rng.choice((-1.0, 1.0))
    return Sprite(to_uint8(colour + polarity * CONTRAST * tone[..., None]), mask)
