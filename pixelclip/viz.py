"""Pictures of label maps: a fixed palette, overlays with a legend, and what learned prompts segment."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .infer import Segmenter, as_chw, chw_to_float

_BAND = 1 << 20  # pixels converted or blended at a time: a huge image is never copied whole as float


def palette(n: int) -> np.ndarray:
    """[n, 3] uint8 colours, distinct for neighbouring indices (golden-ratio hues), reproducible."""
    import colorsys

    hues = (np.arange(n) * 0.618033988749895) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.65 + 0.35 * (i % 2), 0.95 - 0.25 * (i % 3 == 2)) for i, h in enumerate(hues)]
    return (np.array(rgb) * 255).astype(np.uint8).reshape(n, 3)


def image_rgb8(image) -> np.ndarray:
    """Any image `to_image_tensor` takes -> uint8 RGB [H, W, 3] (8-bit RGB is shared, not copied;
    other formats are converted in row bands)."""
    x = as_chw(image)  # [C, H, W], the image's own dtype
    if x.dtype == torch.uint8 and x.shape[0] == 3:
        return x.permute(1, 2, 0).cpu().numpy()
    H, W = x.shape[-2:]
    out = np.empty((H, W, 3), np.uint8)
    step = max(1, _BAND // W)
    for r in range(0, H, step):
        band = chw_to_float(x[:, r:r + step]).mul_(255.0).round_()  # [3, rows, W]
        out[r:r + step] = band.to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return out


def overlay(image, labels, names: Sequence[str] | None = None, alpha: float = 0.55) -> Image.Image:
    """The image with the label map [H, W] (torch or numpy, non-negative integers) blended over it,
    and below it a legend of the classes present. Memory: the picture plus a few rows at a time."""
    img = image_rgb8(image)  # [H, W, 3] uint8
    lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if lab.shape != img.shape[:2]:
        raise ValueError(f"labels {lab.shape} and image {img.shape[:2]} differ in size")
    H, W = lab.shape
    step = max(1, _BAND // W)  # rows at a time
    n = max(int(lab.max()) + 1, len(names) if names else 0)
    counts = np.zeros(n, np.int64)
    for r in range(0, H, step):
        counts += np.bincount(lab[r:r + step].ravel(), minlength=n)
    colours = palette(n)  # [n, 3]
    present = [i for i in np.flatnonzero(counts) if names and i < len(names)]
    legend = _legend(W, [(str(names[i]), colours[i]) for i in present]) if names else None
    canvas = Image.new("RGB", (W, H + (legend.height if legend is not None else 0)), "white")
    weighted = colours.astype(np.float32) * alpha  # [n, 3]
    for r in range(0, H, step):
        rows = img[r:r + step].astype(np.float32) * (1 - alpha) + weighted[lab[r:r + step]]  # [rows, W, 3]
        canvas.paste(Image.fromarray(rows.astype(np.uint8)), (0, r))
    if legend is not None:
        canvas.paste(legend, (0, H))
    return canvas


def comparison(image, panels: Sequence[tuple[str, object]], names: Sequence[str], scale: int = 4) -> Image.Image:
    """Side by side, each `scale` times larger (nearest, so label edges stay sharp): the image, then one
    panel per (title, label map [H, W]) -- e.g. the truth, a model before and after training -- with its
    title above, and a legend of every class present in any panel below."""
    img = image_rgb8(image)  # [H, W, 3]
    H, W = img.shape[:2]
    maps = [(t, lab.cpu().numpy() if isinstance(lab, torch.Tensor) else np.asarray(lab)) for t, lab in panels]
    for t, lab in maps:
        if lab.shape != (H, W):
            raise ValueError(f"panel {t!r}: labels {lab.shape} and image {(H, W)} differ in size")
    colours = palette(len(names))
    tiles = [("image", img)] + [(t, colours[lab]) for t, lab in maps]
    side_w, side_h = W * scale, H * scale
    unit = max(14, side_w // 12)  # title row height
    font = ImageFont.load_default(size=unit - 4)
    gap = scale * 2
    width = len(tiles) * side_w + (len(tiles) - 1) * gap
    present = sorted(set().union(*(np.unique(lab).tolist() for _, lab in maps)))
    legend = _legend(width, [(str(names[c]), colours[c]) for c in present if c < len(names)])
    canvas = Image.new("RGB", (width, unit + side_h + legend.height), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (title, tile) in enumerate(tiles):
        x = k * (side_w + gap)
        draw.text((x + 2, 2), title, fill="black", font=font)
        canvas.paste(Image.fromarray(tile.astype(np.uint8)).resize((side_w, side_h), Image.NEAREST), (x, unit))
    canvas.paste(legend, (0, unit + side_h))
    return canvas


def _legend(width: int, entries: list[tuple[str, np.ndarray]]) -> Image.Image:
    """A legend of (name, colour) entries in columns, `width` wide; text scales with the width."""
    unit = max(14, width // 64)  # row height in pixels
    font = ImageFont.load_default(size=unit - 4)
    col_w = max(unit * 2 + max((int(font.getlength(t)) for t, _ in entries), default=0), unit * 6)
    cols = max(1, min(len(entries), width // col_w))
    rows = -(-len(entries) // cols)
    legend = Image.new("RGB", (width, unit * rows + unit // 2), "white")
    draw = ImageDraw.Draw(legend)
    for k, (text, colour) in enumerate(entries):
        x, y = 4 + (k // rows) * col_w, unit // 4 + (k % rows) * unit
        draw.rectangle([x, y + 2, x + unit - 4, y + unit - 2], fill=tuple(int(c) for c in colour))
        draw.text((x + unit, y + 1), text, fill="black", font=font)
    return legend


@torch.no_grad()
def prompt_segmentation(task, images, **segmenter_kwargs) -> list[torch.Tensor]:
    """What the learned class prompts segment (the paper's Fig. 5c-d / 7): each pixel labelled with
    the nearest of the K learned class features. Returns label maps [H, W] in [0, K).
    `segmenter_kwargs` go to `Segmenter.from_pixelclip` (protocol, max_side, ...)."""
    seg = Segmenter.from_pixelclip(task, **segmenter_kwargs)
    return seg.segment_with_features(images, task.class_features())
