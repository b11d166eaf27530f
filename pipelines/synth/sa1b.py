"""Synthetic SA-1B shards in the exact SA-1B layout, for tests, benchmarks and the demo.

    pixelclip synth-sa1b -o s3://bucket/raw --shards 2 --images 8 --size 96x128 --masks 12
    pixelclip synth-sa1b -o out/raw --shards 1 --images 4 --size 1500x2250 --masks 100  # SA-1B size

Each shard `sa_NNNNNN.tar` holds, per image, `sa_<id>.jpg` and `sa_<id>.json` (real tar members
written as a stream; JSON with `image` and `annotations`, each annotation a real COCO RLE from
pycocotools with area, bbox, predicted_iou, stability_score, point_coords and crop_box). Images are
textured backgrounds with random ellipses, rectangles and polygons; the masks are those shapes.
`corrupt` plants bad members for the skip-and-count tests (see CORRUPTIONS).
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from pipelines import storage

CORRUPTIONS = ("truncated_jpeg", "not_jpeg", "bad_json", "bad_rle", "size_mismatch", "no_masks",
               "missing_pair")


def synth_image(rng: np.random.Generator, h: int, w: int, n_masks: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """(rgb uint8 [h, w, 3], n bool masks [h, w]): a smooth textured background and random shapes."""
    low = rng.uniform(40, 215, size=(4, 6, 3)).astype(np.uint8)
    img = np.asarray(Image.fromarray(low).resize((w, h), Image.BILINEAR), dtype=np.float32)
    masks = []
    canvas = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    for _ in range(n_masks):
        layer = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(layer)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.03, 0.3) * h, rng.uniform(0.03, 0.3) * w
        box = [cx - rx, cy - ry, cx + rx, cy + ry]
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse(box, fill=255)
        elif kind == 1:
            draw.rectangle(box, fill=255)
        else:
            ang = np.sort(rng.uniform(0, 2 * np.pi, 6))
            draw.polygon([(cx + rx * np.cos(a), cy + ry * np.sin(a)) for a in ang], fill=255)
        m = np.asarray(layer) > 0
        if m.sum() < 4:
            continue
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        canvas.paste(colour, mask=layer)
        masks.append(m)
    rgb = np.asarray(canvas).astype(np.int16)
    rgb = rgb + rng.integers(-12, 13, size=(h, w, 1), dtype=np.int16)  # grain
    return rgb.clip(0, 255).astype(np.uint8), masks


def sa1b_json(image_id: int, h: int, w: int, masks: list[np.ndarray], rng: np.random.Generator) -> dict:
    anns = []
    for i, m in enumerate(masks):
        enc = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        ys, xs = np.nonzero(m)
        k = rng.integers(len(ys))
        anns.append({
            "id": image_id * 1000 + i,
            "segmentation": {"size": [h, w], "counts": enc["counts"].decode("ascii")},
            "area": int(mask_utils.area(enc)),
            "bbox": [float(v) for v in mask_utils.toBbox(enc)],
            "predicted_iou": float(rng.uniform(0.85, 1.0)),
            "stability_score": float(rng.uniform(0.9, 1.0)),
            "point_coords": [[float(xs[k]), float(ys[k])]],
            "crop_box": [0.0, 0.0, float(w), float(h)],
        })
    return {"image": {"image_id": image_id, "width": w, "height": h, "file_name": f"sa_{image_id}.jpg"},
            "annotations": anns}


def encode_jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _corrupt(kind: str, jpg: bytes, doc: dict) -> tuple[bytes | None, bytes]:
    """Apply one corruption to a sample's (jpg, json) bytes; None means the member is missing."""
    if kind == "truncated_jpeg":
        return jpg[: len(jpg) // 3], json.dumps(doc).encode()
    if kind == "not_jpeg":
        buf = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buf, format="PNG")
        return buf.getvalue(), json.dumps(doc).encode()
    if kind == "bad_json":
        return jpg, b'{"image": {"image_id": 1, "width": '
    if kind == "bad_rle":
        doc["annotations"][0]["segmentation"]["counts"] = "\x7f\x01not-rle"
    elif kind == "size_mismatch":
        h, w = doc["image"]["height"], doc["image"]["width"]
        doc["image"]["height"] = h * 2
        for a in doc["annotations"]:
            a["segmentation"]["size"] = [h * 2, w]
    elif kind == "no_masks":
        doc["annotations"] = []
    elif kind == "missing_pair":
        return None, json.dumps(doc).encode()
    return jpg, json.dumps(doc).encode()


def samples(shard: int, n: int, h: int, w: int, n_masks: int, seed: int,
            corrupt: dict[str, int] | None = None) -> Iterator[tuple[str, bytes | None, bytes]]:
    """(stem, jpg bytes or None, json bytes) for the images of one shard; corruptions in shard 0."""
    rng = np.random.default_rng([seed, shard])
    plan = [k for k, c in (corrupt or {}).items() for _ in range(c)] if shard == 0 else []
    bad = {i * 2 + 1: k for i, k in enumerate(plan)}  # every other image, good ones between
    if plan and 2 * len(plan) + 1 > n:
        raise ValueError(f"shard 0 needs at least {2 * len(plan) + 1} images for {len(plan)} corruptions")
    for i in range(n):
        image_id = shard * 1_000_000 + i + 1
        rgb, masks = synth_image(rng, h, w, n_masks)
        doc = sa1b_json(image_id, h, w, masks, rng)
        jpg = encode_jpeg(rgb)
        if i in bad:
            jpg, js = _corrupt(bad[i], jpg, doc)
        else:
            js = json.dumps(doc).encode()
        yield f"sa_{image_id}", jpg, js


def add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
    tar.addfile(info, io.BytesIO(data))


def write_shards(out_uri: str, shards: int = 2, images: int = 8, size: tuple[int, int] = (96, 128),
                 masks: int = 12, seed: int = 0, corrupt: dict[str, int] | None = None,
                 truncate_last: bool = False, opts: storage.StorageOptions | None = None) -> list[str]:
    """Write `shards` tars of `images` samples each under `out_uri`; returns their URIs.

    `truncate_last` cuts the last shard in the middle (a corrupt tar: its first samples are good)."""
    unknown = set(corrupt or {}) - set(CORRUPTIONS)
    if unknown:
        raise ValueError(f"unknown corruption {sorted(unknown)}; known: {', '.join(CORRUPTIONS)}")
    fs, root = storage.fsspec_fs(out_uri, opts)
    fs.makedirs(root, exist_ok=True)
    uris = []
    for s in range(shards):
        path = f"{root.rstrip('/')}/sa_{s:06d}.tar"
        cut = truncate_last and s == shards - 1
        with fs.open(path, "wb") as f:
            out = io.BytesIO() if cut else f  # stream straight to storage unless we must cut it
            with tarfile.open(fileobj=out, mode="w|") as tar:
                for stem, jpg, js in samples(s, images, *size, masks, seed, corrupt):
                    if jpg is not None:
                        add_member(tar, f"{stem}.jpg", jpg)
                    add_member(tar, f"{stem}.json", js)
            if cut:
                data = out.getvalue()
                f.write(data[: int(len(data) * 0.6)])
        uris.append(storage.join(out_uri, f"sa_{s:06d}.tar"))
    return uris
