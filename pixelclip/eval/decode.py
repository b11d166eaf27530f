"""Decoding of benchmark images and label maps from bytes, and label value mappings.

    image = decode_image(data, path)         # [H, W, 3] uint8 RGB
    label = decode_label(data, path, lut)    # [H, W] int64 in [0, C) or 255 (ignore)

A label mapping is a look-up table `lut` [V] int64 from a stored value to a class index
(0..C-1), to IGNORE_INDEX (255), or to -1 where the stored value is not allowed (an error).
`path` is only used in error messages.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

IGNORE_INDEX = 255
_INVALID = -1
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_LABEL_MODES = ("P", "L", *_SIXTEEN_BIT)


def identity_lut(num_classes: int) -> np.ndarray:
    """Values 0..C-1 stay, 255 stays ignore, anything else is invalid. [256] int64."""
    lut = np.full(256, _INVALID, dtype=np.int64)
    lut[:num_classes] = np.arange(num_classes)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def reduce_zero_lut(num_classes: int) -> np.ndarray:
    """0 (background / unlabelled) -> ignore, 1..C -> 0..C-1, 255 stays ignore. [256] int64."""
    lut = np.full(256, _INVALID, dtype=np.int64)
    lut[0] = IGNORE_INDEX
    lut[1 : num_classes + 1] = np.arange(num_classes)
    lut[IGNORE_INDEX] = IGNORE_INDEX
    return lut


def table_lut(used: list[int], size: int = 256) -> np.ndarray:
    """`used[i]` -> i; every other value 0..size-1 -> ignore (nothing is invalid). [size] int64."""
    lut = np.full(size, IGNORE_INDEX, dtype=np.int64)
    lut[np.asarray(used, dtype=np.int64)] = np.arange(len(used))
    return lut


def _open(data: bytes, path: str, what: str) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except Exception as e:  # PIL raises several types (UnidentifiedImageError, OSError, SyntaxError)
        raise ValueError(f"cannot decode {what} {path}: {e}") from e
    return img


def decode_image(data: bytes, path: str) -> np.ndarray:
    """Decode an image file to RGB. Returns [H, W, 3] uint8.

    Grayscale, palette, CMYK, YCbCr and 1-bit images are converted to RGB; alpha is dropped
    (not composited); 16-bit (and 32-bit integer "I") grayscale is scaled from 0..65535 to
    0..255. The pixel grid is kept as stored (no EXIF rotation), as the label maps are.
    """
    img = _open(data, path, "image")
    if img.mode in _SIXTEEN_BIT:
        a = np.asarray(img).astype(np.float64)  # [H, W]
        a = np.clip(np.rint(a / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(a[:, :, None], 3, axis=2)  # [H, W, 3]
    if img.mode == "F":
        raise ValueError(f"image {path} is floating point (mode F); its value range is unknown")
    if img.mode != "RGB":
        try:
            img = img.convert("RGB")
        except ValueError as e:
            raise ValueError(f"cannot convert image {path} from mode {img.mode} to RGB: {e}") from e
    return np.asarray(img, dtype=np.uint8).copy()  # [H, W, 3]


def _ranges(values: np.ndarray) -> str:
    """'0..58, 255' for a sorted 1-D array of ints."""
    out, start = [], None
    for i, v in enumerate(values.tolist()):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            out.append(str(start) if start == v else f"{start}..{v}")
            start = None
    return ", ".join(out)


def decode_label(data: bytes, path: str, lut: np.ndarray) -> np.ndarray:
    """Decode a single-channel label PNG and map its values through `lut`. Returns [H, W] int64.

    Palette ("P") images are read as their indices, never converted to colours. Raises
    ValueError naming `path` for a colour (RGB/RGBA) label or for values the mapping does not
    allow (e.g. "unknown class value 200 in .../x.png").
    """
    img = _open(data, path, "label")
    if img.mode not in _LABEL_MODES:
        raise ValueError(
            f"label {path} has mode {img.mode}; expected a single-channel index image (P, L or 16-bit), "
            "not a colour-coded one"
        )
    raw = np.asarray(img).astype(np.int64)  # [H, W]
    inside = (raw >= 0) & (raw < len(lut))
    mapped = np.full(raw.shape, _INVALID, dtype=np.int64)
    mapped[inside] = lut[raw[inside]]
    bad = mapped == _INVALID
    if bad.any():
        values = np.unique(raw[bad])
        shown = ", ".join(str(v) for v in values[:10].tolist()) + (", ..." if len(values) > 10 else "")
        allowed = _ranges(np.flatnonzero(lut != _INVALID))
        noun = "value" if len(values) == 1 else "values"
        raise ValueError(f"unknown class {noun} {shown} in {path} (this layout allows {allowed})")
    return mapped
