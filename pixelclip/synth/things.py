"""The "thing" classes of the synthetic scenes: single-word names, each with one fixed appearance.

No class needs a colour to be bound to a shape to be named ("green circle" vs "green square", which
a pilot's tiny CLIP could not learn): every class has a silhouette no other class has, except target,
which shares the disc of ball but alone carries rings (red and white); and colours are distinct
wherever 18 classes allow. Where two colours are close (ball / target, star / moon, cross / bone,
arrow / fish, ring / drop) the silhouettes or patterns differ. leaf, crate, gear, flower, target and
fish carry an inner pattern in a second colour.

A shape is a predicate on unit coordinates (u, v) in [-1, 1] (v points down, as image rows); the
scene generator maps each object's pixels to (u, v) through its centre, radius and rotation. Every
object gets a 1 px darker outline, so that it stays visible on a background of its own colour.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Predicate = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ThingClass:
    """A thing class: `shape(u, v)` -> bool, its `colour`, and an optional `accent(u, v)` region
    (inside the shape) painted in `accent_colour`. `looks` describes it for people."""

    name: str
    looks: str
    colour: tuple[int, int, int]
    shape: Predicate
    accent: Predicate | None = None
    accent_colour: tuple[int, int, int] = (0, 0, 0)


def polygon(points: list[tuple[float, float]]) -> Predicate:
    """Predicate of a simple polygon given as (u, v) vertices (even-odd rule)."""
    pts = np.asarray(points, dtype=np.float32)

    def inside(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        out = np.zeros(np.broadcast(u, v).shape, dtype=bool)
        for (u1, v1), (u2, v2) in zip(pts, np.roll(pts, -1, axis=0), strict=True):
            crosses = (v1 > v) != (v2 > v)  # the edge spans this row
            with np.errstate(divide="ignore", invalid="ignore"):
                at = u1 + (v - v1) * (u2 - u1) / (v2 - v1)  # u where the edge meets the row
            out ^= crosses & (u < at)
        return out

    return inside


def _disc(cu: float, cv: float, r: float) -> Predicate:
    return lambda u, v: (u - cu) ** 2 + (v - cv) ** 2 < r * r


def _star(points: int = 5, inner: float = 0.42) -> Predicate:
    a = -np.pi / 2 + np.arange(2 * points) * np.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return polygon(list(zip(r * np.cos(a), r * np.sin(a), strict=True)))


def _heart(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    x, y = 1.15 * u, -1.15 * v + 0.15  # the classic sextic heart, point down
    return (x * x + y * y - 1) ** 3 - x * x * y**3 < 0


def _leaf(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    c, r2 = 0.9, 0.9**2 + 1.0  # a lens: two discs through (0, -1) and (0, 1)
    return ((u - c) ** 2 + v * v < r2) & ((u + c) ** 2 + v * v < r2)


def _gear(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    r, t = np.hypot(u, v), np.arctan2(v, u)
    tooth = (t * 8 / (2 * np.pi)) % 1 < 0.5  # 8 teeth
    return (r < 0.7) | ((r < 0.97) & tooth)


def _flower(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = u * u + v * v < 0.4**2
    for a in -np.pi / 2 + np.arange(5) * 2 * np.pi / 5:
        out |= (u - 0.58 * np.cos(a)) ** 2 + (v - 0.58 * np.sin(a)) ** 2 < 0.4**2
    return out


def _bone(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    out = (np.abs(u) < 0.7) & (np.abs(v) < 0.17)
    for cu in (-0.7, 0.7):
        for cv in (-0.2, 0.2):
            out |= (u - cu) ** 2 + (v - cv) ** 2 < 0.25**2
    return out


_ARROW = polygon([(-0.95, -0.22), (0.15, -0.22), (0.15, -0.62), (0.95, 0.0), (0.15, 0.62), (0.15, 0.22),
                  (-0.95, 0.22)])
_FISH_TAIL = polygon([(0.3, 0.0), (0.95, -0.5), (0.95, 0.5)])
_DROP_TIP = polygon([(0.0, -1.0), (0.52, 0.12), (-0.52, 0.12)])
_WHITE = (248, 248, 248)

THINGS: tuple[ThingClass, ...] = (
    ThingClass("ball", "red disc", (215, 35, 35), _disc(0, 0, 1)),
    ThingClass("ring", "blue annulus", (35, 75, 225), lambda u, v: (u * u + v * v < 1) & (u * u + v * v > 0.55**2)),
    ThingClass("moon", "pale yellow crescent", (240, 228, 140),
               lambda u, v: (u * u + v * v < 1) & ((u - 0.5) ** 2 + v * v > 0.8**2)),
    ThingClass("star", "yellow five-pointed star", (250, 205, 10), _star()),
    ThingClass("cross", "white plus sign", _WHITE,
               lambda u, v: ((np.abs(u) < 0.3) & (np.abs(v) < 0.95)) | ((np.abs(v) < 0.3) & (np.abs(u) < 0.95))),
    ThingClass("kite", "orange diamond", (250, 135, 15), lambda u, v: np.abs(u) / 0.62 + np.abs(v) < 1),
    ThingClass("leaf", "lime lens with a dark midrib", (115, 205, 40), _leaf,
               lambda u, v: (np.abs(u) < 0.07) & (np.abs(v) < 0.85), (40, 95, 20)),
    ThingClass("heart", "pink heart", (250, 110, 170), _heart),
    ThingClass("crate", "brown square with a dark frame and brace", (160, 105, 50),
               lambda u, v: (np.abs(u) < 0.82) & (np.abs(v) < 0.82),
               lambda u, v: (np.maximum(np.abs(u), np.abs(v)) > 0.64) | (np.abs(u - v) < 0.13), (95, 55, 25)),
    ThingClass("tent", "purple triangle", (135, 55, 190), polygon([(0.0, -0.95), (0.95, 0.75), (-0.95, 0.75)])),
    ThingClass("arrow", "cyan arrow", (20, 200, 220), _ARROW),
    ThingClass("gear", "steel cog with a dark hub", (70, 80, 100), _gear, _disc(0, 0, 0.25), (25, 28, 36)),
    ThingClass("flower", "magenta five-petal flower, yellow centre", (215, 35, 200), _flower,
               _disc(0, 0, 0.3), (250, 215, 30)),
    ThingClass("target", "red disc with white rings", (215, 35, 35), _disc(0, 0, 1),
               lambda u, v: np.floor(np.hypot(u, v) * 5) % 2 == 1, _WHITE),
    ThingClass("bone", "ivory dog bone", (232, 220, 190), _bone),
    ThingClass("fish", "teal fish with a tail and a dark eye", (0, 140, 130),
               lambda u, v: (((u + 0.15) / 0.62) ** 2 + (v / 0.42) ** 2 < 1) | _FISH_TAIL(u, v),
               _disc(-0.5, -0.08, 0.09), (15, 15, 15)),
    ThingClass("bowl", "olive half disc", (140, 140, 30), lambda u, v: (u * u + v * v < 1) & (v > -0.1)),
    ThingClass("drop", "light blue teardrop", (110, 185, 255),
               lambda u, v: _disc(0, 0.35, 0.6)(u, v) | _DROP_TIP(u, v)),
)  # fmt: skip
