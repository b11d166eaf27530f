"""Where the learned class prompts lie among the text features of class names (the paper's Fig. 5a-b).

    prompts = task.class_features()                                   # [K, D]
    classes = task.text.class_embeddings(names, ENSEMBLE_TEMPLATES)   # [C, D]
    xy = project_2d(torch.cat([prompts, classes]), method="pca")      # [K + C, 2]
    draw_map(xy, [f"prompt {k}" for k in range(K)] + names, [True] * K + [False] * C).save("map.png")

PCA is numpy's SVD (deterministic up to the sign, which is fixed); t-SNE is scikit-learn's, when it
is installed (it is not a dependency of this package).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

METHODS = ("pca", "tsne")
PROMPT_COLOUR, CLASS_COLOUR = (214, 39, 40), (31, 119, 180)


def project_2d(features, method: str = "pca", seed: int = 0) -> np.ndarray:
    """Features [N, D] (torch or numpy) -> 2-D coordinates [N, 2] float64 of the L2-normalised rows,
    by PCA (the two leading principal components) or t-SNE (scikit-learn, perplexity <= 30)."""
    x = features.detach().cpu().double().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"features must be [N, D] with N >= 1, got shape {x.shape}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    x = x.astype(np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # [N, D] on the unit sphere
    return _pca(x) if method == "pca" else _tsne(x, seed)


def _pca(x: np.ndarray) -> np.ndarray:
    """The two leading principal components [N, 2] (zero-padded when the data span fewer)."""
    centred = x - x.mean(0)  # [N, D]
    u, s, vt = np.linalg.svd(centred, full_matrices=False)  # u [N, r], s [r], vt [r, D]
    out = np.zeros((x.shape[0], 2))
    r = min(2, s.shape[0])
    out[:, :r] = u[:, :r] * s[:r]  # [N, r] scores
    for j in range(r):  # fix the sign: the largest-magnitude loading of each component is positive
        if vt[j, np.argmax(np.abs(vt[j]))] < 0:
            out[:, j] = -out[:, j]
    return out


def _tsne(x: np.ndarray, seed: int) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError as err:
        raise ValueError("method 'tsne' needs scikit-learn, which is not installed "
                         "(pip install scikit-learn, or use method 'pca')") from err
    if x.shape[0] < 3:
        raise ValueError(f"t-SNE needs at least 3 points, got {x.shape[0]}; use method 'pca'")
    perplexity = float(min(30.0, max(1.0, (x.shape[0] - 1) / 3)))  # must stay below N
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
    return tsne.fit_transform(x).astype(np.float64)


def draw_map(xy: np.ndarray, labels: Sequence[str], is_prompt: Sequence[bool], size: int = 900,
             title: str | None = None) -> Image.Image:
    """Scatter plot of points `xy` [N, 2] with a text label each: learned prompts as red squares,
    class names as blue dots, on a white `size` x `size` canvas with a legend."""
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2 or not (len(labels) == len(is_prompt) == xy.shape[0]):
        raise ValueError(f"xy must be [N, 2] with N labels and N is_prompt flags, got {xy.shape}, "
                         f"{len(labels)}, {len(is_prompt)}")
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=max(10, size // 70))
    top, margin = size // 12, size // 10
    lo, hi = xy.min(0), xy.max(0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    px = margin + (xy - lo) / span * (size - 2 * margin)  # [N, 2] pixels, x right
    px[:, 1] = size - px[:, 1] + top / 2  # y up, below the header
    px[:, 1] = np.clip(px[:, 1], top + 4, size - 4)
    r = max(3, size // 180)
    for (x, y), text, prompt in zip(px, labels, is_prompt, strict=True):
        colour = PROMPT_COLOUR if prompt else CLASS_COLOUR
        _marker(draw, [x - r, y - r, x + r, y + r], colour, prompt)
        draw.text((x + r + 2, y - r - 2), str(text), fill=colour, font=font)
    _header(draw, font, size, title)
    return img


def _header(draw: ImageDraw.ImageDraw, font, size: int, title: str | None) -> None:
    r, y = max(3, size // 180), size // 40
    if title:
        draw.text((size // 40, y - size // 60), title, fill="black", font=font)
        y += size // 30
    for k, (text, colour, prompt) in enumerate((("learned prompt", PROMPT_COLOUR, True),
                                                ("class name", CLASS_COLOUR, False))):
        x = size // 40 + k * size // 4
        _marker(draw, [x, y, x + 2 * r, y + 2 * r], colour, prompt)
        draw.text((x + 3 * r, y - r), text, fill="black", font=font)


def _marker(draw: ImageDraw.ImageDraw, box: list, colour: tuple, prompt: bool) -> None:
    if prompt:
        draw.rectangle(box, fill=colour)
    else:
        draw.ellipse(box, fill=colour)
