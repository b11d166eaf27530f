"""Images and class names, as every stage reads them: photos (local or s3://, EXIF applied, 16-bit kept),
typed class lists, class-name files and the labelled benchmarks (`pixelclip.eval.datasets`) over storage."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipelines import storage
from pixelclip.eval.datasets import open_benchmark
from pixelclip.infer import check_class_names


def parse_classes(classes: str | Sequence[str]) -> list[str]:
    """"cat, grass, sky" or ["cat", "grass", "sky"] -> a checked list of names (ValueError when empty or
    with duplicates)."""
    names = [c.strip() for c in classes.split(",") if c.strip()] if isinstance(classes, str) else list(classes)
    return check_class_names(names)


def decode_photo(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded image bytes -> uint8 RGB [H, W, 3], or uint16 [H, W] for 16-bit grayscale; EXIF
    orientation applied, alpha dropped."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            ImageOps.exif_transpose(img, in_place=True)  # no copy: photos may be huge
            if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grayscale: keep its depth
                return np.asarray(img).clip(0, 65535).astype(np.uint16)
            return np.asarray(img if img.mode == "RGB" else img.convert("RGB"))
    except Image.DecompressionBombError as err:
        raise ValueError(f"{name}: {err} (PIL's limit on image size, Image.MAX_IMAGE_PIXELS)") from err
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"{name} is not a readable image (PNG, JPEG, ...): {err}") from err


def read_photo(path: str | os.PathLike) -> np.ndarray:
    """`decode_photo` of a local file or a storage URI (s3://...; keys from the environment)."""
    text = str(path)
    if "://" in text and not text.startswith("file://"):
        return decode_photo(storage.read_bytes(text), text)
    local = Path(text.removeprefix("file://"))
    if not local.is_file():
        raise FileNotFoundError(f"image {local} does not exist")
    return decode_photo(local.read_bytes(), text)


def open_dataset(name: str, root: str, split: str, opts: storage.StorageOptions | None = None,
                 class_names: list[str] | None = None):
    """A benchmark reader over a local folder or an s3:// prefix (`class_names`: your own classes)."""
    if storage.is_s3(root):
        fs, path = storage.fsspec_fs(root, opts)
        return open_benchmark(name, path, split, fs=fs, class_names=class_names)
    return open_benchmark(name, root.removeprefix("file://"), split, class_names=class_names)


def read_class_names(uri: str, opts: storage.StorageOptions | None = None) -> list[str]:
    """Class names from a text file (local or s3://), one per line, in label order."""
    text = storage.read_bytes(uri, opts).decode("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]
