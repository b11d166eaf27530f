"""The training reader: training-ready Parquet shards -> weak / strong views with their masks.

    ds = training_dataset("s3://data/ready/", cfg)               # a Ray Dataset of augmented samples
    for batch in iter_batches(ds, batch_size=4):                 # dicts of torch tensors
        trainer.step(**batch)
    # inside Ray Train: iter_batches(ray.train.get_dataset_shard("train"), per_worker_batch)

Each row is decoded (JPEG at the stored resolution; masks straight from their RLE runs at only the
pixels the crop needs, never rasterised whole) and augmented by `pixelclip.data.augment.ViewAugment`.
Rows carry uint8 views and bit-packed masks, so that Ray's object store moves ~1/20 of the float
bytes; `collate` unpacks them into the tensors `Trainer.step` takes.
"""

from __future__ import annotations

import hashlib
import io
import os

import numpy as np
import torch

from pipelines import storage
from pixelclip.config import Config
from pixelclip.data.augment import ViewAugment
from pixelclip.data.rle_resize import RLEMasks

COLUMNS = ["image_id", "image", "height", "width", "masks"]


def decode_row(row: dict, augment: ViewAugment, seed: int | None = None) -> dict:
    """One training-ready record -> augmented sample (uint8 views, packed masks). With an augment that
    makes crop views (masks computed online, `pipelines.stages.train.online_masks`), the record's own masks are not
    read and the sample carries the weak view at the crop's resolution as "crop" instead."""
    from PIL import Image

    im = Image.open(io.BytesIO(row["image"])).convert("RGB")
    image = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)  # [3, H, W] uint8
    stored = [] if augment.crop_view else list(row["masks"])
    masks = RLEMasks(stored, (int(row["height"]), int(row["width"])))
    g = torch.Generator()
    if seed is None:  # fresh views every epoch
        g.manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    else:  # reproducible, and different for every image
        digest = hashlib.blake2b(f"{seed}:{row['image_id']}".encode(), digest_size=8).digest()
        g.manual_seed(int.from_bytes(digest, "little") >> 1)
    v = augment(image, masks, generator=g)
    out = {
        "image_id": row["image_id"],
        "weak": _uint8(v.weak),  # [3, S, S]
        "strong": _uint8(v.strong),  # [3, S, S]
        "masks": np.packbits(v.masks.numpy(), axis=-1),  # [N, M, M/8]
        "keep": np.packbits(v.keep.numpy(), axis=-1),  # [M, M/8]
        "num_masks": int(v.masks.shape[0]),
    }
    if v.crop is not None:
        out["crop"] = _uint8(v.crop)  # [3, C, C]: the online mask model's input
    return out


def _uint8(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round_().to(torch.uint8).numpy()


def collate(batch: dict, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A numpy batch of `decode_row` outputs -> weak, strong [B, 3, S, S] float in [0, 1],
    masks [B, Nmax, M, M] bool (padded with empty masks), keep [B, M, M] bool."""
    weak = torch.as_tensor(np.stack(list(batch["weak"]))).float().div_(255)
    strong = torch.as_tensor(np.stack(list(batch["strong"]))).float().div_(255)
    keep_packed = np.stack(list(batch["keep"]))  # [B, M, M/8]
    M = keep_packed.shape[1]
    keep = np.unpackbits(keep_packed, axis=-1, count=M).astype(bool)
    n_max = max(int(n) for n in batch["num_masks"]) if len(batch["num_masks"]) else 0
    masks = np.zeros((len(weak), n_max, M, M), dtype=bool)
    for i, packed in enumerate(batch["masks"]):
        n = int(batch["num_masks"][i])
        if n:
            masks[i, :n] = np.unpackbits(np.asarray(packed).reshape(n, M, -1), axis=-1, count=M).astype(bool)
    out = {"weak": weak, "strong": strong, "masks": torch.from_numpy(masks), "keep": torch.from_numpy(keep)}
    return {k: v.to(device) for k, v in out.items()}


def training_dataset(uri: str, cfg: Config, opts: storage.StorageOptions | None = None,
                     seed: int | None = None, online=None):
    """A Ray Dataset of augmented samples from the training-ready shards under `uri`.

    online: a `pipelines.stages.train.online_masks.OnlineMasks` (masks computed on each training crop by a Ray Data
    actor stage after the CPU augmentation), or None for the records' own masks."""
    import ray

    opts = opts or storage.StorageOptions.from_env()
    files = storage.check_readable(uri, (".parquet",), opts)
    if online is None:
        _check_has_masks(files[0], opts)
    fs, path = storage.arrow_fs(uri, storage.for_ray(opts), with_keys=False)  # the readers find the keys
    ds = ray.data.read_parquet(path, filesystem=fs).select_columns(COLUMNS)  # projection is pushed into the read
    augment = ViewAugment(cfg.data, cfg.backbone.image_size, crop_view=online is not None)
    ds = ds.map(decode_row, fn_kwargs={"augment": augment, "seed": seed})
    return online.attach(ds, cfg) if online is not None else ds


def _check_has_masks(uri: str, opts) -> None:
    """Records written without masks (`prepare --source images`) train only with online masks."""
    import pyarrow.parquet as pq

    fs, path = storage.arrow_fs(uri, opts)
    sources = pq.read_table(path, columns=["mask_source"], filesystem=fs).column(0).unique().to_pylist()
    if sources == ["images"]:
        raise ValueError(f"{uri} holds images without masks (prepare --source images): train with masks "
                         "computed on each crop (--masks dino)")


def iter_batches(ds, batch_size: int, device: str | torch.device = "cpu", drop_last: bool = True):
    """Batches of tensors for `Trainer.step` from a Ray Dataset (or a Ray Train dataset shard)."""
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", drop_last=drop_last):
        yield collate(batch, device)
