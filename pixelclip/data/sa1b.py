"""SA-1B samples -> training-ready records: parse, validate, select masks, resize. Pure functions.

An SA-1B sample is a JPEG and a JSON file:
    {"image": {"image_id", "width", "height", "file_name"},
     "annotations": [{"segmentation": {"size": [h, w], "counts": "<COCO RLE>"}, "area", "bbox",
                      "predicted_iou", "stability_score", "point_coords", "crop_box"}, ...]}
`convert_sample` turns one into a record of the training-ready schema (see `RECORD_FIELDS`):
the image re-encoded at the stored resolution (decoded at reduced scale with JPEG DCT scaling, never
at full size when it is not needed), masks resized in run space to the same resolution (never
rasterised at full size), masks too small at that resolution dropped, the largest kept.
Anything wrong raises `SampleError` with a reason code, so that callers skip and count the sample.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import rle
from .rle_resize import resize_joined

# Reasons a sample is skipped; the pipelines count them.
REASONS = ("corrupt_tar", "missing_pair", "bad_image", "bad_json", "bad_rle", "size_mismatch", "no_masks")

# The training-ready record: column -> meaning (Parquet types in pipelines/stages/prepare.py).
RECORD_FIELDS = {
    "image_id": "string: the sample's id (file stem, e.g. sa_223750)",
    "source": "string: shard or file the sample came from",
    "member": "string: tar member or file name of the image",
    "mask_source": "string: sa1b | dino | sam",
    "image": "binary: JPEG at the stored resolution",
    "height": "int32: stored height",
    "width": "int32: stored width",
    "orig_height": "int32: original height",
    "orig_width": "int32: original width",
    "masks": "list<binary>: COCO compressed RLE counts of each mask at (height, width), largest first",
    "mask_area": "list<int32>: pixels of each mask at (height, width)",
    "num_masks": "int32",
}


class SampleError(ValueError):
    """A sample that cannot be used; `reason` is one of REASONS."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass
class ConvertOptions:
    short_side: int = 750  # stored resolution: short side (the authors pre-halved SA-1B to 750)
    # Masks as the authors keep them: every mask (about 100 per SA-1B image, some images 400+); training
    # drops those of at most one pixel at data.mask_size in each crop. Raise min_area (pixels at the
    # stored resolution) or set max_masks (the largest kept; 0: all) to make records smaller.
    min_area: int = 1
    max_masks: int = 0
    jpeg_quality: int = 90


def stored_size(h: int, w: int, short_side: int) -> tuple[int, int]:
    """(h2, w2) with the short side at `short_side`; never upscales."""
    s = min(1.0, short_side / min(h, w))
    return max(1, round(h * s)), max(1, round(w * s))


def decode_jpeg(data: bytes, size: tuple[int, int] | None = None) -> Image.Image:
    """Decode JPEG bytes to RGB, using DCT scaling (draft) when `size` (h, w) is much smaller."""
    try:
        im = Image.open(io.BytesIO(data))
        if im.format not in ("JPEG", "MPO"):
            raise SampleError("bad_image", f"not a JPEG (format {im.format})")
        if size is not None:
            im.draft("RGB", (size[1], size[0]))  # decodes at 1/2, 1/4 or 1/8 scale, never below size
        im.load()
        if im.mode != "RGB":  # grayscale or CMYK JPEGs; RGB ones are used as decoded, no copy
            im = im.convert("RGB")
    except SampleError:
        raise
    except Exception as e:  # truncated data, broken headers, ...: PIL raises many types
        raise SampleError("bad_image", f"cannot decode the image: {e}") from e
    return im


def parse_record(data: bytes | str) -> tuple[dict, list[dict]]:
    """(image info, annotations) of an SA-1B JSON file, checked for the fields used."""
    try:
        doc = json.loads(data)
        info, anns = doc["image"], doc["annotations"]
        h, w = int(info["height"]), int(info["width"])
        if not isinstance(anns, list):
            raise TypeError("annotations is not a list")
    except (ValueError, KeyError, TypeError) as e:
        raise SampleError("bad_json", f"malformed SA-1B JSON: {e}") from e
    if h <= 0 or w <= 0:
        raise SampleError("bad_json", f"image size {h}x{w} is not positive")
    return {**info, "height": h, "width": w}, anns


def _rle(ann: dict, h: int, w: int) -> str | np.ndarray:
    """The RLE counts of one annotation (compressed string, or a list for uncompressed RLE)."""
    seg = ann.get("segmentation") if isinstance(ann, dict) else None
    if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
        raise SampleError("bad_rle", "annotation without an RLE segmentation")
    if list(seg["size"]) != [h, w]:
        raise SampleError("size_mismatch", f"mask size {list(seg['size'])} != image size [{h}, {w}]")
    counts = seg["counts"]
    return counts if isinstance(counts, str | bytes) else np.asarray(counts, dtype=np.int64)


def convert_sample(jpeg: bytes, record: bytes | str, opts: ConvertOptions) -> dict:
    """One SA-1B sample -> a training-ready record (see RECORD_FIELDS, without the provenance
    fields `source`, `member`, `mask_source`, which the caller adds)."""
    info, anns = parse_record(record)
    h, w = info["height"], info["width"]
    h2, w2 = stored_size(h, w, opts.short_side)
    im = decode_jpeg(jpeg, (h2, w2))
    scale = im.width / w
    if abs(im.height / h - scale) > 0.02 or abs(round(h * scale) - im.height) > 8:
        raise SampleError("size_mismatch", f"JPEG is {im.height}x{im.width} (at scale {scale:.3g}), "
                                           f"the JSON says {h}x{w}")
    counts = [_rle(a, h, w) for a in anns]
    if not counts:
        raise SampleError("no_masks", "the sample has no annotations")
    try:
        resized = resize_joined(counts, (h, w), (h2, w2))  # run space: never at full resolution
    except ValueError as e:
        raise SampleError("bad_rle", str(e)) from e
    image_id = str(info.get("file_name", info.get("image_id", ""))).rsplit(".", 1)[0]
    return _record(image_id, im, resized, (h, w), (h2, w2), opts)


def _record(image_id: str, im: Image.Image, resized: tuple[np.ndarray, np.ndarray], size: tuple[int, int],
            stored: tuple[int, int], opts: ConvertOptions) -> dict:
    """Select the largest masks (joined run lengths at `stored`), re-encode the image, build the record."""
    (h, w), (h2, w2) = size, stored
    areas = rle.areas(*resized)
    order = [i for i in np.argsort(-areas, kind="stable") if areas[i] >= opts.min_area][: opts.max_masks or None]
    if not order:
        raise SampleError("no_masks", f"no mask has {opts.min_area} pixels at {h2}x{w2}")
    if im.size != (w2, h2):
        im = im.resize((w2, h2), Image.BILINEAR, reducing_gap=None)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=opts.jpeg_quality)
    strings = rle.encode_many(*resized)
    return {
        "image_id": image_id, "image": buf.getvalue(), "height": h2, "width": w2, "orig_height": h,
        "orig_width": w, "masks": [strings[i] for i in order],
        "mask_area": [int(areas[i]) for i in order], "num_masks": len(order),
    }


def masks_record(image_id: str, image: Image.Image, masks: np.ndarray, opts: ConvertOptions) -> dict:
    """A training-ready record from an image and bool masks [N, H, W] at its resolution (the DINO
    and SAM mask sources), resized to the stored resolution and selected like SA-1B masks."""
    h, w = image.height, image.width
    if masks.ndim != 3 or masks.shape[1:] != (h, w):
        raise SampleError("size_mismatch", f"masks {masks.shape} do not match the image {h}x{w}")
    h2, w2 = stored_size(h, w, opts.short_side)
    resized = resize_joined([rle.mask_to_counts(m) for m in masks], (h, w), (h2, w2))
    return _record(image_id, image, resized, (h, w), (h2, w2), opts)


def image_record(image_id: str, image: Image.Image, opts: ConvertOptions) -> dict:
    """A training-ready record of an image alone, at the stored resolution, with no masks: for training
    with masks computed on each crop (`--masks dino`), which never reads the records' masks."""
    h, w = image.height, image.width
    h2, w2 = stored_size(h, w, opts.short_side)
    if image.size != (w2, h2):
        image = image.resize((w2, h2), Image.BILINEAR, reducing_gap=None)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=opts.jpeg_quality)
    return {"image_id": image_id, "image": buf.getvalue(), "height": h2, "width": w2, "orig_height": h,
            "orig_width": w, "masks": [], "mask_area": [], "num_masks": 0}
