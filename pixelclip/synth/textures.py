"""Procedural "stuff" textures of the synthetic scenes: each class has its own colour statistics and
its own texture, so that neither colour nor texture alone is needed to tell two of them apart.

    grass  dark green, vertical blade streaks
    sand   tan, fine grain and diagonal ripples
    water  blue, horizontal waves with light crests
    rock   grey, irregular cells with dark cracks (Voronoi)
    snow   near white with a blue tint, soft shadows and sparkles
    brick  red-brown bricks in offset rows, light mortar lines

Every texture is a function (rng, h, w) -> float32 [h, w, 3] in grey levels (about 0..255, not
clipped); periods scale with min(h, w) / 128, so a 256 px scene looks like a zoomed 128 px one.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image

Texture = Callable[[np.random.Generator, int, int], np.ndarray]


def smooth_noise(rng: np.random.Generator, h: int, w: int, cells: tuple[int, int]) -> np.ndarray:
    """Gaussian noise on a (cells_y, cells_x) grid, upsampled bicubically to [h, w] float32 (std about 1)."""
    low = rng.standard_normal(cells).astype(np.float32)
    return np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.float32)


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(y [h, 1], x [1, w], scale) with scale = min(h, w) / 128."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :], min(h, w) / 128


def _base(rng: np.random.Generator, rgb: tuple[int, int, int], h: int, w: int) -> np.ndarray:
    """A base colour with a small per-scene jitter (+-6% per channel), broadcast to [h, w, 3]."""
    colour = np.asarray(rgb, dtype=np.float32) * rng.uniform(0.94, 1.06, 3).astype(np.float32)
    return np.broadcast_to(colour, (h, w, 3)).copy()


def grass(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Dark green with vertical blade streaks: noise coarse along y, fine along x."""
    _, _, s = _grid(h, w)
    streaks = smooth_noise(rng, h, w, (max(2, int(10 / s)), max(4, w // 2)))  # [h, w]
    tone = smooth_noise(rng, h, w, (3, 3))
    out = _base(rng, (58, 118, 38), h, w)
    out += (26 * streaks + 10 * tone)[..., None] * np.float32([0.6, 1.0, 0.35])
    return out


def sand(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Tan with a fine grain and soft diagonal ripples."""
    y, x, s = _grid(h, w)
    a = rng.uniform(0.3, 1.2)  # ripple direction
    phase = 2 * np.pi * (x * np.cos(a) + y * np.sin(a)) / (7 * s) + 1.5 * smooth_noise(rng, h, w, (4, 4))
    out = _base(rng, (214, 188, 134), h, w)
    out += (9 * np.sin(phase) + 12 * rng.standard_normal((h, w)).astype(np.float32))[..., None]
    return out


def water(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Blue with horizontal waves (wobbling phase) and light crests."""
    y, _, s = _grid(h, w)
    wave = np.sin(2 * np.pi * y / (9 * s) + 2.5 * smooth_noise(rng, h, w, (4, 4)))  # [h, w] in [-1, 1]
    out = _base(rng, (36, 92, 166), h, w)
    out += (24 * wave)[..., None] * np.float32([0.5, 0.8, 1.0])
    out += (45 * (wave > 0.85))[..., None].astype(np.float32)  # crests
    return out


def rock(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Grey cells of random brightness (Voronoi of random seeds) split by dark cracks."""
    y, x, s = _grid(h, w)
    n = max(4, int(h * w / (14 * s) ** 2))
    seeds = rng.uniform(0, 1, (n, 2)).astype(np.float32) * np.float32([h, w])  # [n, 2] (y, x)
    d = np.sqrt((y[None] - seeds[:, 0, None, None]) ** 2 + (x[None] - seeds[:, 1, None, None]) ** 2)  # [n, h, w]
    order = np.argsort(d, axis=0)[:2]  # nearest and second nearest seed
    d1, d2 = np.take_along_axis(d, order[:1], 0)[0], np.take_along_axis(d, order[1:2], 0)[0]
    cell = rng.uniform(-25, 25, n).astype(np.float32)[order[0]]  # [h, w] per-cell brightness
    out = _base(rng, (122, 118, 110), h, w)
    out += (cell - 45 * (d2 - d1 < 1.5 * s) + 6 * smooth_noise(rng, h, w, (8, 8)))[..., None]
    return out


def snow(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Near white with a blue tint, soft bluish shadows and sparse bright sparkles."""
    shade = np.minimum(smooth_noise(rng, h, w, (5, 5)), 0)  # [h, w], <= 0
    out = _base(rng, (232, 238, 248), h, w)
    out += (14 * shade)[..., None] * np.float32([1.0, 0.8, 0.3])
    out += (30 * (rng.random((h, w)) < 0.01))[..., None].astype(np.float32)
    return out


def brick(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Red-brown bricks (2:1) in rows offset by half a brick, each of its own shade, light mortar."""
    y, x, s = _grid(h, w)
    bh = max(4, round(8 * s))
    bw, mortar = 2 * bh, max(1, round(1.5 * s))
    y0, x0 = rng.integers(0, bh), rng.integers(0, bw)
    row = ((y + y0) // bh).astype(np.int64)  # [h, 1]
    xs = x + x0 + (row % 2) * (bw // 2)  # [h, w] shifted on odd rows
    col = (xs // bw).astype(np.int64)
    shade = rng.uniform(-18, 18, (row.max() + 1, col.max() + 1)).astype(np.float32)[row, col]  # [h, w]
    joint = ((y + y0) % bh < mortar) | (xs % bw < mortar)
    out = _base(rng, (158, 68, 48), h, w) + shade[..., None]
    out[joint] = np.float32([205, 200, 188])
    return out


TEXTURES: dict[str, Texture] = {"grass": grass, "sand": sand, "water": water, "rock": rock,
                                "snow": snow, "brick": brick}
