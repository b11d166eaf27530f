"""Segment a photo with typed class names: the `pixelclip segment` command and its Python API.

    pixelclip segment photo.jpg --classes "cat, grass, sky" --model models:/pixelclip@champion -o out.png

    from pipelines.stages.segment import segment_image
    labels, picture = segment_image("run/checkpoint.safetensors", "photo.jpg", "cat, grass, sky")
    picture.save("out.png")   # labels: [H, W] uint8 (uint16 from 256 classes on), indices into the classes

`model` is anything `pipelines.models.load_segmenter` takes (models:/name@alias, runs:/..., a .safetensors
checkpoint local or s3://, openclip:NAME[:TAG]) or a ready `pixelclip.infer.Segmenter`; the photo a local
path, an s3:// URI, or an image in memory (numpy, PIL, torch). Huge photos are segmented in bounded memory
(see `pixelclip.infer`); the label map is at the photo's full resolution.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipelines.images import parse_classes, read_photo
from pixelclip.infer import Segmenter
from pixelclip.viz import overlay


def label_dtype(num_classes: int) -> np.dtype:
    """The label map's dtype (also its PNG's): uint8 below 256 classes, else uint16."""
    if num_classes > 65536:
        raise ValueError(f"at most 65536 classes fit a 16-bit label map, got {num_classes}")
    return np.dtype(np.uint8 if num_classes < 256 else np.uint16)


def segment_image(model: str | Segmenter, image, classes: str | Sequence[str], *, device: str = "cpu",
                  protocol: str = "whole", mode: str | None = None, templates: str = "ensemble",
                  image_size: int | None = None, max_side: int | None = None,
                  alpha: float = 0.55) -> tuple[np.ndarray, Image.Image]:
    """Segment one photo with typed class names.

    model: a model source (see the module docstring) or a `Segmenter` (then used as it is, and the
    loading options device / protocol / mode / templates / image_size do not apply).
    image: path, s3:// URI or image in memory.  classes: "cat, grass, sky" or a list of names.
    max_side: huge images are shrunk to this long side before encoding (default: the Segmenter's).
    Returns (labels [H, W] uint8 (uint16 from 256 classes on), indices into the classes, at the photo's
    resolution; the overlay with a legend, a PIL image [H + legend, W])."""
    names = parse_classes(classes)
    dtype = label_dtype(len(names))
    # the photo first: a missing or unreadable one fails before a model is loaded
    photo = read_photo(image) if isinstance(image, str | os.PathLike) else image
    if isinstance(model, Segmenter):
        seg = model
    else:
        from pipelines.models import load_segmenter

        seg = load_segmenter(model, device=device, protocol=protocol, mode=mode, templates=templates,
                             image_size=image_size)
    if max_side is not None and max_side != seg.max_side:
        seg = _with_max_side(seg, max_side)
    torch_dtype = torch.uint8 if dtype == np.uint8 else torch.uint16
    labels = seg.segment(photo, names, dtype=torch_dtype)[0].cpu().numpy()  # [H, W]
    return labels, overlay(photo, labels, names, alpha=alpha)


def _with_max_side(seg: Segmenter, max_side: int) -> Segmenter:
    """A shallow copy of `seg` (sharing its models and text cache) with another `max_side`."""
    if int(max_side) < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    other = copy.copy(seg)
    other.max_side = int(max_side)
    return other


def class_fractions(labels: np.ndarray, num_classes: int, rows: int = 1024) -> np.ndarray:
    """Fraction of pixels [num_classes] of each class in a label map [H, W] (counted in row bands)."""
    counts = np.zeros(num_classes, np.int64)
    for r in range(0, labels.shape[0], rows):
        counts += np.bincount(labels[r:r + rows].ravel(), minlength=num_classes)[:num_classes]
    return counts / max(1, labels.size)


def save_labels(labels: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a label map [H, W] as a PNG of class indices (8-bit, or 16-bit from 256 classes on)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(labels)).save(path)
    return path
