"""A pool of SynthScenes image-caption pairs for CLIP pretraining: drawn once, cached as .npz, then
sampled with random crops, flips and freshly drawn captions.

    pool = load_pool("out/cache", seed=0, size=128, count=16384)   # built (2 processes) or read
    batches = CaptionBatches(pool, batch=64, crop_scale=0.85, seed=0)
    images, captions = batches.sample()     # [64, 3, 128, 128] float in [0, 1], 64 strings

Pool scenes are `scene_at(seed, i, "clip")`: a stream of their own, disjoint from the SA-1B training
shards ("train") and the labelled evaluation split ("eval"), as CLIP's web data is disjoint from both.
Drawing a scene costs about 10-45 ms of one core, a training step on a batch of 64 about a second, so
the pool is drawn before training and reused. Each time a scene is sampled its caption is drawn
anew with the generator's own `caption` (random template, things and stuff in random order), so
the text varies even when the image repeats.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .scenes import CLASS_NAMES, NUM_STUFF, SceneConfig, caption, scene_at

POOL_SPLIT = "clip"
MAX_ITEMS = 6  # at most 3 stuff regions + 3 things per scene


@dataclass(eq=False)
class ScenePool:
    """`images` [N, S, S, 3] uint8; `classes` [N, 6] int16: the classes in each scene (indices into
    CLASS_NAMES; stuff by area, largest first, then things), padded with -1."""

    images: np.ndarray
    classes: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def _scene_tag(cfg: SceneConfig) -> str:
    return f"{zlib.crc32(json.dumps(asdict(cfg), sort_keys=True).encode()):08x}"


def pool_path(cache_dir: str | Path, seed: int, size: int, count: int) -> Path:
    """The cache file of a pool: keyed by seed, size, count and the scene settings."""
    tag = _scene_tag(SceneConfig(size=size))
    return Path(cache_dir) / f"synthclip-pool-{POOL_SPLIT}-seed{seed}-{size}px-n{count}-{tag}.npz"


def _draw(args: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Scenes [start, stop) of the pool: (images [n, S, S, 3], classes [n, 6])."""
    seed, size, start, stop = args
    cfg = SceneConfig(size=size)
    images = np.zeros((stop - start, size, size, 3), np.uint8)
    classes = np.full((stop - start, MAX_ITEMS), -1, np.int16)
    for j, i in enumerate(range(start, stop)):
        s = scene_at(seed, i, POOL_SPLIT, cfg)
        images[j] = s.image
        classes[j, :len(s.instance_labels)] = s.instance_labels
    return images, classes


def build_pool(seed: int, size: int, count: int, workers: int = 2) -> ScenePool:
    """Draw `count` scenes of `size` px (in `workers` processes when > 1)."""
    if count < 1 or workers < 1:
        raise ValueError(f"need count >= 1 and workers >= 1, got {count} and {workers}")
    step = max(1, min(512, -(-count // workers)))
    chunks = [(seed, size, a, min(count, a + step)) for a in range(0, count, step)]
    if workers == 1 or len(chunks) == 1:
        parts = [_draw(c) for c in chunks]
    else:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
            parts = list(ex.map(_draw, chunks))
    return ScenePool(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def load_pool(cache_dir: str | Path | None, seed: int, size: int, count: int, workers: int = 2) -> ScenePool:
    """The pool from its cache file under `cache_dir`, drawn and written there first if missing
    (None: always drawn, never cached)."""
    if cache_dir is None:
        return build_pool(seed, size, count, workers)
    path = pool_path(cache_dir, seed, size, count)
    if path.is_file():
        with np.load(path) as z:
            return ScenePool(z["images"], z["classes"])
    pool = build_pool(seed, size, count, workers)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp, images=pool.images, classes=pool.classes)
    tmp.replace(path)  # atomic: a reader never sees half a file
    return pool


def scene_caption(classes: np.ndarray, rng: np.random.Generator) -> str:
    """A fresh caption for a scene of `classes` [6] (-1 padded): things and stuff in random order."""
    present = [int(c) for c in classes if c >= 0]
    stuff = [CLASS_NAMES[c] for c in present if c < NUM_STUFF]
    things = [CLASS_NAMES[c] for c in present if c >= NUM_STUFF]
    rng.shuffle(stuff)
    rng.shuffle(things)
    return caption(things, stuff, rng)


class CaptionBatches:
    """Random batches of a pool: each image cropped to a random square of side in [crop_scale, 1]
    of the image (resized back), flipped left-right half the time, with a fresh caption.

    `sample()` -> (images [B, 3, S, S] float32 in [0, 1], B captions).
    """

    def __init__(self, pool: ScenePool, batch: int, crop_scale: float = 1.0, seed: int = 0):
        if batch < 1 or batch > len(pool):
            raise ValueError(f"batch must be in [1, pool size {len(pool)}], got {batch}")
        if not 0 < crop_scale <= 1:
            raise ValueError(f"crop_scale must be in (0, 1], got {crop_scale}")
        self.images = torch.from_numpy(pool.images)  # [N, S, S, 3] uint8, shared with the pool
        self.classes = pool.classes
        self.batch, self.crop_scale = batch, crop_scale
        self.rng = np.random.default_rng([seed, zlib.crc32(b"caption-batches")])

    def _augment(self, img: torch.Tensor) -> torch.Tensor:
        """[3, S, S] -> [3, S, S]: random square crop, resized back; random left-right flip."""
        S = img.shape[-1]
        side = int(self.rng.integers(round(self.crop_scale * S), S + 1))
        y, x = (int(v) for v in self.rng.integers(0, S - side + 1, 2))
        out = img[:, y:y + side, x:x + side]
        if side != S:
            out = F.interpolate(out[None], size=(S, S), mode="bilinear", align_corners=False)[0]
        return out.flip(-1) if self.rng.random() < 0.5 else out

    def sample(self) -> tuple[torch.Tensor, list[str]]:
        idx = self.rng.choice(len(self.images), self.batch, replace=False)  # [B]
        x = self.images[torch.from_numpy(idx)].permute(0, 3, 1, 2).float().div_(255.0)  # [B, 3, S, S]
        x = torch.stack([self._augment(im) for im in x])
        return x, [scene_caption(self.classes[i], self.rng) for i in idx]
