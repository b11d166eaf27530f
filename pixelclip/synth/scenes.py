"""SynthScenes: seeded synthetic scenes of textured "stuff" regions and "thing" objects, with per-pixel
labels, unlabeled instance masks and a caption.

    from pixelclip.synth import CLASS_NAMES, scene_at
    s = scene_at(seed=0, index=7)      # the same scene on every machine
    s.image     # [H, W, 3] uint8
    s.label     # [H, W] int64, index into CLASS_NAMES (every pixel labelled)
    s.instances # [N, H, W] bool, one mask per stuff region and per thing: a partition of the image
    s.caption   # "a ball and a leaf on grass next to water"

A scene (128 px by default) holds 1-3 stuff regions (distinct classes, split by smooth random
boundaries: a Voronoi of random seeds warped by smooth noise, each region at least `min_stuff` of the
image) and 1-3 things (distinct classes, mostly 1-2), each 28-64 px across at 128 px (a ViT with
patch 8 sees it over 3-8 patches), with random position, size, rotation (+-30 degrees), brightness
and light direction, overlapping another by at most 10% of the smaller one (later ones in front).
Gaussian pixel noise is added last. Labels come from the same pixel predicates that paint the image,
so they are exact (no anti-aliasing). The classes are listed in `pixelclip.synth.textures` (stuff)
and `pixelclip.synth.things` (things); CLASS_NAMES is stuff then things.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from .textures import TEXTURES, smooth_noise
from .things import THINGS, ThingClass

STUFF_NAMES: tuple[str, ...] = tuple(TEXTURES)
THING_NAMES: tuple[str, ...] = tuple(t.name for t in THINGS)
CLASS_NAMES: tuple[str, ...] = STUFF_NAMES + THING_NAMES
NUM_STUFF = len(STUFF_NAMES)

_TEMPLATES = ("{things} on {stuff}", "a photo of {things} on {stuff}", "a picture of {things} on {stuff}",
              "{things} lying on {stuff}", "a photo of {stuff} with {things}", "{stuff} with {things}")


def _check_probs(name: str, probs: tuple[float, ...], most: int) -> None:
    p = np.asarray(probs, dtype=np.float64)
    if not 1 <= len(p) <= most or (p < 0).any() or abs(p.sum() - 1) > 1e-6:
        raise ValueError(f"SceneConfig.{name}: expected 1 to {most} probabilities (of 1, 2, ... items) "
                         f"summing to 1, got {probs}")


@dataclass(frozen=True)
class SceneConfig:
    """How scenes are drawn. Sizes are fractions of the image side unless they say px."""

    size: int = 128  # image side, px
    things: tuple[float, ...] = (0.45, 0.4, 0.15)  # P(1 thing), P(2), P(3)
    stuff: tuple[float, ...] = (0.35, 0.4, 0.25)  # P(1 stuff region), P(2), P(3)
    thing_size: tuple[float, float] = (0.22, 0.5)  # thing diameter: 28-64 px at 128
    max_rotation: float = 30.0  # degrees either way
    brightness: float = 0.15  # relative brightness jitter of a thing, either way
    max_overlap: float = 0.1  # of the smaller thing's area
    min_stuff: float = 0.12  # smallest stuff region (before things are placed)
    noise: float = 5.0  # std of the Gaussian pixel noise, grey levels

    def __post_init__(self):
        if self.size < 32:
            raise ValueError(f"SceneConfig.size must be at least 32 px, got {self.size}")
        _check_probs("things", self.things, len(THINGS))
        _check_probs("stuff", self.stuff, len(STUFF_NAMES))
        lo, hi = self.thing_size
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"SceneConfig.thing_size must satisfy 0 < low <= high <= 1, got {self.thing_size}")
        if not 0 <= self.max_overlap < 1:
            raise ValueError(f"SceneConfig.max_overlap must be in [0, 1), got {self.max_overlap}")
        if not 0 < self.min_stuff * len(self.stuff) <= 1:
            raise ValueError(f"SceneConfig.min_stuff: {len(self.stuff)} regions of {self.min_stuff} do not fit")
        for name in ("max_rotation", "brightness", "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"SceneConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass(eq=False)
class Scene:
    """One scene. `instances` [N, H, W] bool partitions the image; `instance_labels` [N] int64 is
    the class of each (stuff regions first, then things in drawing order)."""

    image: np.ndarray  # [H, W, 3] uint8
    label: np.ndarray  # [H, W] int64 in [0, len(CLASS_NAMES))
    instances: np.ndarray  # [N, H, W] bool
    instance_labels: np.ndarray  # [N] int64
    caption: str

    @property
    def class_names(self) -> list[str]:
        """Names of the classes in the image, in label order."""
        return [CLASS_NAMES[c] for c in np.unique(self.label)]


@dataclass
class _Thing:
    cls: int  # index into THINGS
    mask: np.ndarray  # [H, W] bool, the whole object
    accent: np.ndarray  # [H, W] bool
    shade: np.ndarray  # [H, W] float32 relative brightness


def _stuff_regions(rng: np.random.Generator, cfg: SceneConfig, n: int) -> np.ndarray:
    """Region index [H, W] int64 in [0, n): warped Voronoi, every region >= min_stuff (fewer if it fails)."""
    S = cfg.size
    y, x = np.mgrid[0:S, 0:S].astype(np.float32) / S  # [S, S] each, in [0, 1)
    for attempt in range(40):
        k = max(1, n - attempt // 20)  # after 20 failures, one region fewer
        seeds = rng.uniform(0, 1, (k, 2))
        field = np.stack([-np.hypot(y - sy, x - sx) + 0.12 * smooth_noise(rng, S, S, (3, 3))
                          for sy, sx in seeds])  # [k, S, S]
        region = field.argmax(0)
        if np.bincount(region.ravel(), minlength=k).min() >= cfg.min_stuff * S * S:
            return region
    return np.zeros((S, S), dtype=np.int64)


def _draw_thing(rng: np.random.Generator, cfg: SceneConfig, t: ThingClass) -> tuple[np.ndarray, ...]:
    """(mask, accent, shade) [S, S] of one thing at a random place, size, rotation and lighting."""
    S = cfg.size
    r = rng.uniform(*cfg.thing_size) * S / 2  # radius, px
    cy, cx = rng.uniform(0.8 * r, S - 0.8 * r, 2)
    a = np.deg2rad(rng.uniform(-cfg.max_rotation, cfg.max_rotation))
    y, x = np.mgrid[0:S, 0:S].astype(np.float32) + 0.5  # pixel centres
    dy, dx = y - cy, x - cx
    u = (np.cos(a) * dx + np.sin(a) * dy) / r  # [S, S] unit coordinates of the object
    v = (-np.sin(a) * dx + np.cos(a) * dy) / r
    mask = t.shape(u, v) & (np.abs(u) <= 1) & (np.abs(v) <= 1)
    accent = mask & t.accent(u, v) if t.accent is not None else np.zeros_like(mask)
    light = rng.uniform(0, 2 * np.pi)
    gain = 1 + rng.uniform(-cfg.brightness, cfg.brightness)
    shade = gain * (1 - 0.12 * (u * np.cos(light) + v * np.sin(light)))  # [S, S]
    return mask, accent, shade.astype(np.float32)


def _fits(mask: np.ndarray, placed: list[_Thing], cfg: SceneConfig) -> bool:
    area = mask.sum()
    if area < 16:
        return False
    return all((mask & p.mask).sum() <= cfg.max_overlap * min(area, p.mask.sum()) for p in placed)


def _place_things(rng: np.random.Generator, cfg: SceneConfig, n: int) -> list[_Thing]:
    """Up to n things of distinct classes, each overlapping the others lightly (50 tries each)."""
    placed: list[_Thing] = []
    for cls in rng.choice(len(THINGS), size=n, replace=False):
        for _ in range(50):
            mask, accent, shade = _draw_thing(rng, cfg, THINGS[cls])
            if _fits(mask, placed, cfg):
                placed.append(_Thing(int(cls), mask, accent, shade))
                break
    return placed


def _erode(m: np.ndarray) -> np.ndarray:
    out = m.copy()  # 4-neighbour erosion; pixels beyond the border count as inside
    out[1:] &= m[:-1]
    out[:-1] &= m[1:]
    out[:, 1:] &= m[:, :-1]
    out[:, :-1] &= m[:, 1:]
    return out


def _paint(image: np.ndarray, t: _Thing) -> None:
    """Paint a thing into image [S, S, 3] float32, in place: colour, accent, shading, dark outline."""
    cls = THINGS[t.cls]
    colour = np.where(t.accent[..., None], np.float32(cls.accent_colour), np.float32(cls.colour))  # [S, S, 3]
    colour = colour * t.shade[..., None]
    colour[t.mask & ~_erode(t.mask)] *= 0.55  # outline
    image[t.mask] = colour[t.mask]


def _article(name: str) -> str:
    return f"an {name}" if name[0] in "aeiou" else f"a {name}"


def _listing(words: list[str], rng: np.random.Generator, pair_words: tuple[str, ...] = ("and",)) -> str:
    if len(words) == 1:
        return words[0]
    if len(words) == 2:
        return f"{words[0]} {pair_words[rng.integers(len(pair_words))]} {words[1]}"
    return ", ".join(words[:-1]) + f" and {words[-1]}"


def caption(thing_names: list[str], stuff_names: list[str], rng: np.random.Generator) -> str:
    """A caption naming every thing (with its article) and every stuff class, from varied templates."""
    things = _listing([_article(n) for n in thing_names], rng)
    stuff = _listing(stuff_names, rng, ("and", "next to"))
    return _TEMPLATES[rng.integers(len(_TEMPLATES))].format(things=things, stuff=stuff)


def caption_words() -> list[str]:
    """Every word a SynthScenes caption can hold (class names, articles, the templates' words): the
    vocabulary the SynthScenes CLIP's text tower trained on."""
    words = {w for t in _TEMPLATES for w in t.replace("{things}", " ").replace("{stuff}", " ").split()}
    words |= {"a", "an", "and", "next", "to", ","} | set(CLASS_NAMES)
    return sorted(words)


def make_scene(rng: np.random.Generator, cfg: SceneConfig | None = None) -> Scene:
    """Draw one scene with `rng` (the same generator state gives the same scene)."""
    cfg = cfg or SceneConfig()
    S = cfg.size
    n_stuff = 1 + rng.choice(len(cfg.stuff), p=cfg.stuff)
    stuff_cls = rng.choice(NUM_STUFF, size=n_stuff, replace=False)  # [n_stuff] indices into STUFF_NAMES
    region = _stuff_regions(rng, cfg, n_stuff)  # [S, S]
    label = stuff_cls[region].astype(np.int64)  # [S, S]
    image = np.zeros((S, S, 3), dtype=np.float32)
    for c in np.unique(label):
        image[label == c] = TEXTURES[STUFF_NAMES[c]](rng, S, S)[label == c]
    things = _place_things(rng, cfg, 1 + rng.choice(len(cfg.things), p=cfg.things))
    for t in things:  # later things in front
        _paint(image, t)
        label[t.mask] = NUM_STUFF + t.cls
    image += cfg.noise * rng.standard_normal((S, S, 1)).astype(np.float32)
    image = np.clip(np.rint(image), 0, 255).astype(np.uint8)

    stuff_present = [c for c in np.argsort(-np.bincount(label.ravel(), minlength=len(CLASS_NAMES))[:NUM_STUFF],
                                           kind="stable") if (label == c).any()]  # by area, largest first
    instance_labels = np.asarray(stuff_present + [NUM_STUFF + t.cls for t in things], dtype=np.int64)  # [N]
    instances = label[None] == instance_labels[:, None, None]  # [N, S, S]: every class is one instance
    text = caption([THING_NAMES[t.cls] for t in things], [STUFF_NAMES[c] for c in stuff_present], rng)
    return Scene(image, label, instances, instance_labels, text)


def scene_rng(seed: int, index: int, split: str = "train") -> np.random.Generator:
    """The generator of scene `index` of `split` (splits draw disjoint streams of scenes)."""
    return np.random.default_rng([seed, zlib.crc32(split.encode()), index])


def scene_at(seed: int, index: int, split: str = "train", cfg: SceneConfig | None = None) -> Scene:
    """Scene `index` of `split`: independent of any other scene, so shards can be drawn in any order."""
    return make_scene(scene_rng(seed, index, split), cfg)
