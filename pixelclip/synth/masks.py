"""Unlabeled masks of a synthetic scene, in the three forms the training data may take.

    masks = scene_masks(scene, "oversegmented", rng)   # [M, H, W] bool, no labels

- "instances": the scene's exact regions (each stuff region, each thing): what perfect class-agnostic
  masks would be.
- "oversegmented": each instance cut into 2-4 pieces by a Voronoi partition of random seed pixels
  inside it (straight cuts between seeds), as SAM splits objects into parts; instances under
  `min_pixels` stay whole. Every piece lies inside one instance; the pieces partition the image.
- "kmeans": a CPU stand-in for DINO-feature k-means, NOT DINO: the image is averaged over 4x4 px cells
  (a 32x32 grid at 128 px, like a patch grid), each cell described by [its mean colour, the mean
  colour of its 3x3 cell neighbourhood, x, y], and k-means (k 6-10, `pixelclip.data.masks.kmeans_labels`)
  groups the cells; the cluster map comes back to pixels as `DinoMasker` does (one-hot bilinear +
  argmax). It knows colour and position only, no semantics: it splits textures by colour and merges
  things with backgrounds of a similar colour, and its boundaries are blocky like real patch-level
  masks. A partition of the image, by area descending.
"""

from __future__ import annotations

import numpy as np
import torch

from pixelclip.data.masks import kmeans_labels, label_masks, upsample_labels

from .scenes import Scene

MASK_MODES = ("instances", "oversegmented", "kmeans")


def oversegment(instances: np.ndarray, rng: np.random.Generator, pieces: tuple[int, int] = (2, 4),
                min_pixels: int = 64) -> np.ndarray:
    """Split each mask of instances [N, H, W] bool into `pieces` (inclusive range) Voronoi cells of
    random seed pixels, each piece at least a tenth of its mask (5 tries, then fewer pieces).
    Returns [M, H, W] bool, M >= number of non-empty masks; each piece inside one instance."""
    out = []
    for m in instances:
        ys, xs = np.nonzero(m)  # [P] pixel coordinates of this mask
        if len(ys) < min_pixels:
            if len(ys):
                out.append(m)
            continue
        k, cells = int(rng.integers(pieces[0], pieces[1] + 1)), None
        for attempt in range(10):
            kk = max(1, k - attempt // 5)
            pick = rng.choice(len(ys), size=kk, replace=False)  # seed pixels
            d = (ys[:, None] - ys[pick][None]) ** 2 + (xs[:, None] - xs[pick][None]) ** 2  # [P, kk]
            cells = d.argmin(1)  # [P] piece of each pixel
            if np.bincount(cells, minlength=kk).min() >= len(ys) / 10:
                break
        for c in np.unique(cells):
            piece = np.zeros_like(m)
            piece[ys[cells == c], xs[cells == c]] = True
            out.append(piece)
    return np.stack(out) if out else np.zeros((0, *instances.shape[1:]), dtype=bool)


def _box3(x: np.ndarray) -> np.ndarray:
    """Mean over each 3x3 neighbourhood of x [h, w, C] (edges replicated)."""
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[:2]
    return sum(p[i:i + h, j:j + w] for i in range(3) for j in range(3)) / 9


def kmeans_masks(image: np.ndarray, k: int, seed: int = 0, cell: int = 4, colour_weight: float = 0.5,
                 position_weight: float = 0.5) -> np.ndarray:
    """k-means masks of image [H, W, 3] uint8 on cell features [colour, 3x3-smoothed colour, y, x]
    (smoothed colour in [0, 1], colour in [0, colour_weight], positions in [0, position_weight]).
    Returns a partition [n, H, W] bool, n <= k, by area descending."""
    H, W = image.shape[:2]
    gh, gw = H // cell, W // cell
    cells = image[: gh * cell, : gw * cell].astype(np.float32).reshape(gh, cell, gw, cell, 3).mean((1, 3)) / 255
    yy, xx = np.mgrid[0:gh, 0:gw].astype(np.float32)
    pos = np.stack([yy / max(gh - 1, 1), xx / max(gw - 1, 1)], -1) * position_weight  # [gh, gw, 2]
    feats = np.concatenate([cells * colour_weight, _box3(cells), pos], -1).reshape(1, gh * gw, 8)  # [1, N, 8]
    labels = kmeans_labels(torch.from_numpy(feats), min(k, gh * gw), seed=seed)  # [1, N]
    label_map = upsample_labels(labels[0].reshape(gh, gw), k, (H, W), max_side=max(H, W))  # [H, W]
    return label_masks(label_map.numpy().astype(np.int64))


def scene_masks(scene: Scene, mode: str, rng: np.random.Generator, k: tuple[int, int] = (6, 10)) -> np.ndarray:
    """Unlabeled masks [M, H, W] bool of a scene in `mode` (see MASK_MODES); `k`: the inclusive range
    of the number of k-means clusters."""
    if mode == "instances":
        return scene.instances.copy()
    if mode == "oversegmented":
        return oversegment(scene.instances, rng)
    if mode == "kmeans":
        return kmeans_masks(scene.image, int(rng.integers(k[0], k[1] + 1)), seed=int(rng.integers(2**31)))
    raise ValueError(f"unknown mask mode {mode!r}; valid modes: {', '.join(MASK_MODES)}")
