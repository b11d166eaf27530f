"""Pictures of label maps: a fixed palette, overlays with a legend, and what learned prompts segment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .infer import Segmenter, to_image_tensor


def palette(n: int) -> np.ndarray:
    """[n, 3] uint8 colours, distinct for neighbouring indices (golden-ratio hues), reproducible."""
    import colorsys

    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.25 * (i % 3 == 2)) for i, h in enumerate(hues)]
    return (np.array(rgb) * 255).astype(np.uint8).reshape(n, 3)


def overlay(image, labels: torch.Tensor, names: Sequence[str] | None = None, alpha: float = 0.55) -> Image.Image:
    """The image with the label map [H, W] blended over it, and a legend of the classes present."""
    img = (to_image_tensor(image).permute(1, 2, 0).numpy() * 255).astype(np.uint8)  # [H, W, 3]
    lab = labels.cpu().numpy()
    n = int(max(lab.max() + 1, len(names) if names else 0))
    colours = palette(n)[lab]  # [H, W, 3]
    out = Image.fromarray((img * (1 - alpha) + colours * alpha).astype(np.uint8))
    if names:
        present = [i for i in np.unique(lab) if i < len(names)]
        legend = Image.new("RGB", (out.width, 14 * len(present) + 6), "white")
        draw = ImageDraw.Draw(legend)
        for row, i in enumerate(present):
            y = 3 + 14 * row
            draw.rectangle([4, y, 14, y + 10], fill=tuple(int(c) for c in palette(n)[i]))
            draw.text((20, y - 1), str(names[i]), fill="black")
        canvas = Image.new("RGB", (out.width, out.height + legend.height), "white")
        canvas.paste(out, (0, 0))
        canvas.paste(legend, (0, out.height))
        out = canvas
    return out


@torch.no_grad()
def prompt_segmentation(task, images) -> list[torch.Tensor]:
    """What the learned class prompts segment (the paper's Fig. 5c-d / 7): each pixel labelled with
    the nearest of the K learned class features. Returns label maps [H, W] in [0, K)."""
    seg = Segmenter.from_pixelclip(task)
    return seg.segment_with_features(images, task.class_features())
