"""Write SynthScenes (`pixelclip.synth`) in the real formats: SA-1B tars for training, a labelled
evaluation split in the ADE20K layout.

    pixelclip synth-scenes -o out/synth --train-shards 4 --images-per-shard 64 --eval 64 \
        --masks kmeans --size 128 --seed 0

Under OUT (a local folder or an s3:// prefix):

    train/sa_000000.tar ...   SA-1B shards: sa_<id>.jpg + sa_<id>.json per image; the JSON's masks are the
                              unlabeled masks of --masks (instances | oversegmented | kmeans) as COCO RLE
    train/captions.jsonl      {"image_id": "sa_<id>", "shard": "sa_000000.tar", "caption": ..., "classes": [...]}
                              per line: captions are not part of SA-1B (only the CLIP pretraining reads them)
    eval/ADEChallengeData2016/images/validation/ADE_val_<n>.jpg                 JPEG, quality 95
    eval/ADEChallengeData2016/annotations_detectron2/validation/ADE_val_<n>.png  uint8 class index, 0..C-1
    eval/class_names.txt      the C class names, one per line, in label order
    synth_scenes.json         the settings that produced all of this

The training scenes and the evaluation scenes are disjoint streams of the same generator; every scene
depends only on (seed, split, index). Then, for instance:

    pixelclip prepare --input OUT/train --output OUT/ready --source sa1b --min-area 16
    pixelclip evaluate --model ... --benchmark ade20k-150=OUT/eval \
        --class-names ade20k-150=OUT/eval/class_names.txt
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import asdict

import numpy as np
from PIL import Image

from pipelines import storage
from pipelines.synth.sa1b import add_member, encode_jpeg, sa1b_json
from pixelclip.synth import CLASS_NAMES, MASK_MODES, SceneConfig, scene_at, scene_masks, scene_rng

EVAL_PREFIX = "ADEChallengeData2016"
EVAL_IMAGES = f"{EVAL_PREFIX}/images/validation"
EVAL_LABELS = f"{EVAL_PREFIX}/annotations_detectron2/validation"


def _encode(array: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def train_samples(shard: int, images: int, masks: str, cfg: SceneConfig, seed: int
                  ) -> Iterator[tuple[str, bytes, bytes, dict]]:
    """(stem, jpg bytes, SA-1B json bytes, caption record) of the images of one training shard.

    Scene index = shard * images + i; image id = shard * 1_000_000 + i + 1 (as `synth_sa1b`)."""
    for i in range(images):
        index, image_id = shard * images + i, shard * 1_000_000 + i + 1
        scene = scene_at(seed, index, "train", cfg)
        rng = scene_rng(seed, index, "train-masks")  # masks and the JSON's made-up scores
        m = scene_masks(scene, masks, rng)  # [M, S, S] bool, unlabeled
        doc = sa1b_json(image_id, cfg.size, cfg.size, list(m), rng)
        stem = f"sa_{image_id}"
        record = {"image_id": stem, "shard": f"sa_{shard:06d}.tar", "caption": scene.caption,
                  "classes": scene.class_names}
        yield stem, encode_jpeg(scene.image), json.dumps(doc).encode(), record


def write_train_shards(out_uri: str, shards: int, images: int, masks: str = "instances",
                       cfg: SceneConfig | None = None, seed: int = 0,
                       opts: storage.StorageOptions | None = None) -> list[str]:
    """Write `shards` SA-1B tars of `images` scenes each, and `captions.jsonl`, under `out_uri`.
    Returns the URIs of the tars."""
    if masks not in MASK_MODES:
        raise ValueError(f"unknown mask mode {masks!r}; valid modes: {', '.join(MASK_MODES)}")
    if shards < 0 or images < 1:
        raise ValueError(f"need shards >= 0 and images >= 1 per shard, got {shards} and {images}")
    cfg = cfg or SceneConfig()
    fs, root = storage.fsspec_fs(out_uri, opts)
    fs.makedirs(root, exist_ok=True)
    uris, captions = [], []
    for s in range(shards):
        with fs.open(f"{root.rstrip('/')}/sa_{s:06d}.tar", "wb") as f, tarfile.open(fileobj=f, mode="w|") as tar:
            for stem, jpg, js, record in train_samples(s, images, masks, cfg, seed):
                add_member(tar, f"{stem}.jpg", jpg)
                add_member(tar, f"{stem}.json", js)
                captions.append(json.dumps(record))
        uris.append(storage.join(out_uri, f"sa_{s:06d}.tar"))
    storage.write_bytes(storage.join(out_uri, "captions.jsonl"), "".join(c + "\n" for c in captions).encode(), opts)
    return uris


def write_eval_split(out_uri: str, n: int, cfg: SceneConfig | None = None, seed: int = 0,
                     opts: storage.StorageOptions | None = None) -> list[str]:
    """Write `n` labelled scenes in the ADE20K detectron2 layout and `class_names.txt` under `out_uri`
    (the root to give `open_benchmark("ade20k-150", root, class_names=...)`). Returns the ids."""
    if n < 1:
        raise ValueError(f"the evaluation split needs at least 1 image, got {n}")
    cfg = cfg or SceneConfig()
    ids = []
    for i in range(n):
        scene = scene_at(seed, i, "eval", cfg)
        sid = f"ADE_val_{i + 1:08d}"
        storage.write_bytes(storage.join(out_uri, EVAL_IMAGES, f"{sid}.jpg"),
                            _encode(scene.image, "JPEG", quality=95), opts)
        storage.write_bytes(storage.join(out_uri, EVAL_LABELS, f"{sid}.png"),
                            _encode(scene.label.astype(np.uint8), "PNG"), opts)  # [S, S] values 0..C-1
        ids.append(sid)
    storage.write_bytes(storage.join(out_uri, "class_names.txt"), ("\n".join(CLASS_NAMES) + "\n").encode(), opts)
    return ids


def write_scenes(out_uri: str, train_shards: int = 4, images_per_shard: int = 64, n_eval: int = 64,
                 masks: str = "instances", cfg: SceneConfig | None = None, seed: int = 0,
                 opts: storage.StorageOptions | None = None) -> dict:
    """Training shards under OUT/train, the evaluation split under OUT/eval (either skipped at 0) and
    OUT/synth_scenes.json with the settings. Returns those settings with the written paths."""
    cfg = cfg or SceneConfig()
    summary = {"seed": seed, "masks": masks, "scene": asdict(cfg), "class_names": list(CLASS_NAMES),
               "train": None, "eval": None}
    if train_shards:
        tars = write_train_shards(storage.join(out_uri, "train"), train_shards, images_per_shard, masks, cfg, seed,
                                  opts)
        summary["train"] = {"shards": tars, "images": train_shards * images_per_shard,
                            "captions": storage.join(out_uri, "train", "captions.jsonl")}
    if n_eval:
        root = storage.join(out_uri, "eval")
        write_eval_split(root, n_eval, cfg, seed, opts)
        summary["eval"] = {"root": root, "images": n_eval, "benchmark": "ade20k-150",
                           "class_names": storage.join(root, "class_names.txt")}
    storage.write_bytes(storage.join(out_uri, "synth_scenes.json"), json.dumps(summary, indent=1).encode(), opts)
    return summary
