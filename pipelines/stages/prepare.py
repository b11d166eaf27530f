"""Stage `prepare`: SA-1B shards (or plain JPEGs) -> training-ready Parquet shards, on Ray Data.

    pixelclip prepare --input s3://data/sa1b/ --output s3://data/ready/ --source sa1b --sample 0.05
    pixelclip prepare --input s3://photos/ --output s3://data/ready-dino/ --source dino --weights s3://w/dino_vits16.pth

Sources:
- `sa1b`: each `sa_*.tar` is streamed member by member (never held whole in memory); the JPEG and
  the COCO-RLE masks of its JSON are converted by `pixelclip.data.sa1b.convert_sample`.
- `dino` / `sam`: images from tars or from a folder / bucket of JPEGs; masks computed by
  `pixelclip.data.masks` in a Ray Data actor pool, one GPU per actor where the cluster has GPUs.
  `dino` here is whole-image and offline: 16 segments per image at 640x640 (squashed to a square),
  which a training crop sees only in part. The paper's DINO masks are per crop: train with
  `--masks dino` (`pipelines.stages.train.online_masks`) on records of any source.
- `images`: the images alone (no masks), for `train --masks dino`.
A sample that cannot be used is skipped, counted by reason and named (shard and member) in a
warning; every good sample of the same shard is kept. `--sample p` keeps an image when a hash of its
id and the seed falls below p: deterministic, and the same images for every source.
Bad credentials, a missing bucket or an empty prefix fail before any work starts.
"""

from __future__ import annotations

import hashlib
import logging
import tarfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from pipelines import storage
from pixelclip.data.sa1b import ConvertOptions, SampleError, convert_sample
from pixelclip.typed import ConfigError, check

log = logging.getLogger("pixelclip.prepare")

SCHEMA = pa.schema([
    ("image_id", pa.string()), ("source", pa.string()), ("member", pa.string()), ("mask_source", pa.string()),
    ("image", pa.binary()), ("height", pa.int32()), ("width", pa.int32()),
    ("orig_height", pa.int32()), ("orig_width", pa.int32()),
    ("masks", pa.list_(pa.binary())), ("mask_area", pa.list_(pa.int32())), ("num_masks", pa.int32()),
])
SOURCES = ("sa1b", "dino", "sam", "images")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".JPG", ".JPEG")


@dataclass
class PrepareConfig:
    input: str = ""  # s3:// prefix or folder of sa_*.tar (or of JPEGs for dino / sam / images); required
    output: str = ""  # s3:// prefix or folder for the Parquet shards; required
    source: str = "sa1b"  # sa1b: the shards' own masks; dino / sam: masks computed per image; images: none
    sample: float = 1.0  # fraction of images kept (the paper: 0.05 of SA-1B)
    seed: int = 0  # the sample's seed (a hash of it and each image's id)
    convert: ConvertOptions = field(default_factory=ConvertOptions)  # stored size and masks kept
    weights: str | None = None  # DINO / SAM weights: local or s3:// path
    allow_random_weights: bool = False  # tests and demos only: masks from untrained models
    sam_model_type: str = "vit_b"  # vit_b | vit_l | vit_h, or "tiny" (a small random SAM, for tests)
    sam_options: dict = field(default_factory=dict)  # SamAutomaticMaskGenerator options (points_per_side, ...)
    dino_k: int = 16  # k-means clusters per image (source dino)
    dino_image_size: int = 640  # DINO's square input (source dino)
    batch_size: int = 4  # images per mask-model call
    actors: int | None = None  # mask-model actors (default: one per GPU, else 1)
    max_pending: int = 16  # unpaired tar members kept before they count as missing_pair
    overwrite: bool = False  # replace the Parquet files already under `output`

    def validate(self, p: str = "prepare") -> PrepareConfig:
        for name in ("input", "output"):
            check(bool(getattr(self, name)), f"{p}.{name}", "is required (s3:// or a folder)", getattr(self, name))
        check(self.source in SOURCES, f"{p}.source", f"must be one of {', '.join(SOURCES)}", self.source)
        check(0.0 < self.sample <= 1.0, f"{p}.sample", "must be in (0, 1]", self.sample)
        lows = {"convert.short_side": 8, "convert.min_area": 1, "convert.max_masks": 0, "convert.jpeg_quality": 1,
                "dino_k": 2, "dino_image_size": 16, "batch_size": 1, "max_pending": 1, "actors": 1}
        for name, low in lows.items():
            value = getattr(self.convert, name[8:]) if name.startswith("convert.") else getattr(self, name)
            check(value is None or value >= low, f"{p}.{name}", f"must be >= {low}", value)
        check(self.sam_model_type in ("vit_b", "vit_l", "vit_h", "tiny"), f"{p}.sam_model_type",
              "must be vit_b, vit_l, vit_h or tiny", self.sam_model_type)
        if self.source in ("dino", "sam") and not self.weights and not self.allow_random_weights:
            raise ConfigError(f"{p}.weights is required for source {self.source} "
                              "(--weights; --allow-random-weights only for tests)")
        return self


def keep_sample(image_id: str, fraction: float, seed: int) -> bool:
    """Deterministic sampling: a hash of (seed, id) mapped to [0, 1) below `fraction`."""
    if fraction >= 1.0:
        return True
    h = hashlib.blake2b(f"{seed}:{image_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < fraction


def iter_tar_pairs(uri: str, opts: storage.StorageOptions | None, max_pending: int = 16,
                   wanted=lambda stem: True, need: tuple[str, ...] = ("jpg", "json"),
                   ) -> Iterator[tuple[str, dict[str, bytes] | None, str | None]]:
    """Stream a tar: yield (stem, {"jpg": ..., "json": ...}, None) per sample with all the members
    in `need`, or (stem, None, reason) for a problem or an image not `wanted` ("sampled_out", not
    read). Members whose extension is not needed are skipped without being read."""
    pending: dict[str, dict[str, bytes]] = {}
    try:
        with storage.open_input(uri, opts) as f, tarfile.open(fileobj=f, mode="r|*") as tar:
            for member in tar:
                if not member.isfile() or "." not in member.name:
                    continue
                stem, ext = member.name.rsplit("/", 1)[-1].rsplit(".", 1)
                ext = {"jpeg": "jpg"}.get(ext.lower(), ext.lower())
                if ext not in need:
                    continue
                if not wanted(stem):
                    if ext == "jpg":
                        yield stem, None, "sampled_out"
                    continue
                data = tar.extractfile(member).read()  # raises on a cut stream: nothing half-read is kept
                entry = pending.setdefault(stem, {})
                entry[ext] = data
                if len(entry) == len(need):
                    yield stem, pending.pop(stem), None
                while len(pending) > max_pending:  # SA-1B pairs are adjacent: a lone member is orphaned
                    yield next(iter(pending)), None, "missing_pair"
                    pending.pop(next(iter(pending)))
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if storage.is_transient(e):  # the store went away: not the shard's fault, and nothing to skip
            raise storage.unreachable("reading", uri, opts, e, None) from e
        yield "", None, f"corrupt_tar: {e}"
    for stem in list(pending):
        yield stem, None, "missing_pair"


def _convert_shard(row: dict, cfg: PrepareConfig, opts: storage.StorageOptions | None, stats) -> Iterator[dict]:
    """flat_map body: one shard -> good records; skips are counted in the stats actor."""
    uri, counts, examples, seen, sampled_out = row["uri"], Counter(), [], 0, 0
    wanted = lambda stem: keep_sample(stem, cfg.sample, cfg.seed)  # noqa: E731
    for stem, pair, problem in iter_tar_pairs(uri, opts, cfg.max_pending, wanted):
        if problem == "sampled_out":
            sampled_out += 1
            continue
        seen += 1
        try:
            if problem is not None:
                reason, _, detail = problem.partition(": ")
                raise SampleError(reason, detail or "the .jpg or .json of this sample is missing")
            rec = convert_sample(pair["jpg"], pair["json"], cfg.convert)
        except SampleError as e:
            counts[e.reason] += 1
            member = f"{stem}.jpg" if stem else "(tar stream)"
            log.warning("skipped %s in %s: %s", member, uri, e)
            examples.append({"shard": uri, "member": member, "reason": e.reason, "detail": e.detail[:200]})
            continue
        yield {**rec, "source": uri, "member": f"{stem}.jpg", "mask_source": "sa1b"}
    seen -= counts["corrupt_tar"]  # the stream error is not an image
    _count(stats, seen + sampled_out, dict(counts), examples[:20], sampled_out)


def _count(stats, images_in: int, skipped: dict, examples: list, sampled_out: int = 0) -> None:
    """Add to the stats actor and wait until it has: the stage reads the totals as soon as the dataset
    is written, and an add still in flight from a finished task would be lost to the summary."""
    import ray

    ray.get(stats.add.remote(images_in, skipped, examples, sampled_out))


def _image_rows(row: dict, cfg: PrepareConfig, opts, stats) -> Iterator[dict]:
    """flat_map body for the dino / sam sources: images (from a tar or a JPEG file) to mask."""
    uri = row["uri"]
    wanted = lambda stem: keep_sample(stem, cfg.sample, cfg.seed)  # noqa: E731
    if not uri.endswith(".tar"):
        stem = uri.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        if wanted(stem):
            yield {"uri": uri, "image_id": stem, "member": uri.rsplit("/", 1)[-1],
                   "jpeg": storage.read_bytes(uri, opts)}
        else:
            _count(stats, 1, {}, [], 1)
        return
    # images that reach the mask actor are counted there; here only what never gets that far
    images_in, sampled_out, counts, examples = 0, 0, Counter(), []
    for stem, pair, problem in iter_tar_pairs(uri, opts, cfg.max_pending, wanted, need=("jpg",)):
        if pair is not None:
            yield {"uri": uri, "image_id": stem, "member": f"{stem}.jpg", "jpeg": pair["jpg"]}
        elif problem == "sampled_out":
            images_in, sampled_out = images_in + 1, sampled_out + 1
        elif problem:
            reason, _, detail = problem.partition(": ")
            images_in += int(reason != "corrupt_tar")
            counts[reason] += 1
            examples.append({"shard": uri, "member": f"{stem}.jpg", "reason": reason, "detail": detail[:200]})
    if images_in or counts:
        _count(stats, images_in, dict(counts), examples[:20], sampled_out)


def _records_table(records: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(records, schema=SCHEMA)


def summarize(stats: dict, num_masks: np.ndarray, seconds: float, duplicates: dict | None = None) -> dict:
    """The run summary: images in = written + sampled out + skipped (by reason); shards a corrupt tar
    cut short (the images before the cut count); sample ids written more than once; masks per image;
    throughput."""
    written = int(num_masks.size)
    pct = (lambda q: float(np.percentile(num_masks, q))) if written else (lambda q: 0.0)
    images = {k: v for k, v in stats["skipped"].items() if k != "corrupt_tar"}  # a tar error is no image
    duplicates = duplicates or {}
    return {
        "images_in": stats["images_in"], "sampled_out": stats["sampled_out"], "images_written": written,
        "skipped": dict(sorted(images.items())), "skipped_total": sum(images.values()),
        "shard_errors": stats["skipped"].get("corrupt_tar", 0),
        "duplicate_ids": sum(n - 1 for n in duplicates.values()),
        "duplicate_examples": dict(list(sorted(duplicates.items()))[:10]),
        "masks_per_image": {"min": pct(0), "median": pct(50), "p90": pct(90), "max": pct(100),
                            "mean": float(num_masks.mean()) if written else 0.0},
        "seconds": seconds, "images_per_s": written / seconds if seconds > 0 else 0.0,
        "examples": stats["examples"][:20],
    }


def format_summary(s: dict) -> str:
    m = s["masks_per_image"]
    lines = [f"images in {s['images_in']} = written {s['images_written']} + sampled out {s['sampled_out']} + "
             f"skipped {s['skipped_total']} ({', '.join(f'{k} {v}' for k, v in s['skipped'].items()) or 'none'})"
             + (f"; {s['shard_errors']} shard(s) cut short by a corrupt tar" if s.get("shard_errors") else "")]
    if s.get("duplicate_ids"):
        shown = ", ".join(f"{k} x{n}" for k, n in s["duplicate_examples"].items())
        lines.append(f"WARNING: {s['duplicate_ids']} record(s) repeat a sample id already written ({shown}): the "
                     "same image is in more than one input shard; remove the copies or they weigh double")
    lines += [f"masks per image: min {m['min']:.0f}, median {m['median']:.0f}, p90 {m['p90']:.0f}, "
              f"max {m['max']:.0f}, mean {m['mean']:.1f}",
              f"{s['seconds']:.1f} s, {s['images_per_s']:.1f} images/s"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Ray: the stats actor, the mask-model actor, the stage.

def _stats_actor():
    import ray

    @ray.remote(num_cpus=0)
    class PrepareStats:
        def __init__(self):
            self.images_in, self.sampled_out, self.skipped, self.examples = 0, 0, Counter(), []

        def add(self, images_in: int, skipped: dict, examples: list, sampled_out: int = 0) -> None:
            self.images_in += images_in
            self.sampled_out += sampled_out
            self.skipped.update(skipped)
            self.examples.extend(examples[: max(0, 50 - len(self.examples))])

        def get(self) -> dict:
            return {"images_in": self.images_in, "sampled_out": self.sampled_out,
                    "skipped": dict(self.skipped), "examples": list(self.examples)}

    return PrepareStats.remote()


class MaskModelActor:
    """Ray Data actor: decode images at the stored resolution, compute DINO or SAM masks, and build
    records. Weights are fetched once per node (s3:// -> the node's cache, `pipelines.weights`)."""

    def __init__(self, cfg: PrepareConfig, opts: storage.StorageOptions | None, stats, device: str):
        from pipelines.weights import local_weights
        from pixelclip.data import masks as mask_sources

        path = local_weights(cfg.weights, opts, "prepare.weights") if cfg.weights else None
        if cfg.source == "dino":
            self.masker = mask_sources.DinoMasker.from_weights(
                path, k=cfg.dino_k, image_size=cfg.dino_image_size, device=device, seed=cfg.seed)
        else:
            model_type = mask_sources.tiny_sam if cfg.sam_model_type == "tiny" else cfg.sam_model_type
            self.masker = mask_sources.SamMasker.from_weights(path, model_type=model_type, device=device,
                                                              **cfg.sam_options)
        self.cfg, self.stats = cfg, stats

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        from pixelclip.data.sa1b import masks_record

        images, keep, counts, examples = _decode_batch(batch, self.cfg.convert.short_side)
        masks = self.masker([np.asarray(im) for im in images]) if images else []
        records = []
        for (i, h, w), im, m in zip(keep, images, masks, strict=True):
            try:
                rec = masks_record(str(batch["image_id"][i]), im, m, self.cfg.convert)
            except SampleError as e:
                counts[e.reason] += 1
                examples.append({"shard": batch["uri"][i], "member": batch["member"][i], "reason": e.reason,
                                 "detail": e.detail[:200]})
                continue
            records.append({**rec, "orig_height": h, "orig_width": w, "source": str(batch["uri"][i]),
                            "member": str(batch["member"][i]), "mask_source": self.cfg.source})
        for ex in examples:
            log.warning("skipped %s in %s: %s", ex["member"], ex["shard"], ex["detail"])
        _count(self.stats, len(batch["jpeg"]), dict(counts), examples)
        return _records_table(records)


def _decode_batch(batch: dict[str, np.ndarray], short_side: int):
    """Decode a batch's JPEGs at the stored resolution: (images, [(row, orig h, orig w)], skip counts,
    examples); an undecodable image is counted as bad_image, the others are kept."""
    import io

    from PIL import Image

    from pixelclip.data.sa1b import decode_jpeg, stored_size

    images, keep, counts, examples = [], [], Counter(), []
    for i, data in enumerate(batch["jpeg"]):
        try:
            w, h = Image.open(io.BytesIO(data)).size
            size = stored_size(h, w, short_side)
            im = decode_jpeg(data, size)
            images.append(im if (im.height, im.width) == size else im.resize(size[::-1], Image.BILINEAR))
            keep.append((i, h, w))
        except Exception as e:
            counts["bad_image"] += 1
            examples.append({"shard": batch["uri"][i], "member": batch["member"][i], "reason": "bad_image",
                             "detail": str(e)[:200]})
    return images, keep, counts, examples


def _image_records(batch: dict[str, np.ndarray], cfg: PrepareConfig, stats) -> pa.Table:
    """map_batches body of `--source images`: images at the stored resolution, no masks."""
    from pixelclip.data.sa1b import image_record

    images, keep, counts, examples = _decode_batch(batch, cfg.convert.short_side)
    records = [{**image_record(str(batch["image_id"][i]), im, cfg.convert), "orig_height": h, "orig_width": w,
                "source": str(batch["uri"][i]), "member": str(batch["member"][i]), "mask_source": "images"}
               for (i, h, w), im in zip(keep, images, strict=True)]
    for ex in examples:
        log.warning("skipped %s in %s: %s", ex["member"], ex["shard"], ex["detail"])
    _count(stats, len(batch["jpeg"]), dict(counts), examples)
    return _records_table(records)


def list_inputs(cfg: PrepareConfig, opts: storage.StorageOptions | None) -> list[str]:
    """The input files, checked before any work: credentials, bucket, a non-empty prefix."""
    suffixes = (".tar",) if cfg.source == "sa1b" else (".tar", *IMAGE_SUFFIXES)
    return storage.check_readable(cfg.input, suffixes, opts)


def run_prepare(cfg: PrepareConfig, opts: storage.StorageOptions | None = None) -> dict:
    """Run the stage on the current Ray cluster (`ray.init()` first, or it starts a local one)."""
    import ray

    cfg.validate()
    opts = opts or storage.StorageOptions.from_env()
    inputs = list_inputs(cfg, opts)
    storage.check_writable(cfg.output, opts)
    if cfg.weights and cfg.source in ("dino", "sam"):  # one line on the driver, not a traceback in an actor
        from pipelines.weights import check_weights

        cfg.weights = check_weights(cfg.weights, "prepare.weights", opts)
    existing = storage.list_files(cfg.output, (".parquet",), opts)
    if existing and not cfg.overwrite:
        raise ValueError(f"{cfg.output} already holds {len(existing)} Parquet files: choose another output "
                         "or pass --overwrite")
    for uri in existing:
        fs, path = storage.fsspec_fs(uri, opts)
        fs.rm(path)
    t0 = time.perf_counter()
    stats = _stats_actor()
    ds = ray.data.from_items([{"uri": u} for u in inputs], override_num_blocks=len(inputs))
    kwargs = {"cfg": cfg, "opts": storage.for_ray(opts), "stats": stats}  # the workers find the keys
    if cfg.source == "sa1b":
        ds = ds.flat_map(_convert_shard, fn_kwargs=kwargs)
        ds = ds.map_batches(lambda t: t.select(SCHEMA.names).cast(SCHEMA), batch_format="pyarrow")
    elif cfg.source == "images":
        ds = ds.flat_map(_image_rows, fn_kwargs=kwargs).map_batches(
            _image_records, batch_size=cfg.batch_size, batch_format="numpy", fn_kwargs=kwargs)
    else:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        actors = cfg.actors or max(gpus, 1)
        ds = ds.flat_map(_image_rows, fn_kwargs=kwargs).map_batches(
            MaskModelActor, batch_size=cfg.batch_size, batch_format="numpy",
            fn_constructor_kwargs={**kwargs, "device": "cuda" if gpus else "cpu"},
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors), num_gpus=1 if gpus else 0)
    fs, path = storage.arrow_fs(cfg.output, storage.for_ray(opts), with_keys=False)
    ds.write_parquet(path, filesystem=fs, min_rows_per_file=256)
    seconds = time.perf_counter() - t0
    written = storage.list_files(cfg.output, (".parquet",), opts)
    num_masks = _column(written, "num_masks", opts)
    ids = _column(written, "image_id", opts)
    summary = summarize(ray.get(stats.get.remote()), num_masks, seconds, find_duplicates(ids))
    ray.kill(stats)
    return summary


def find_duplicates(ids) -> dict[str, int]:
    """{sample id: times written} for every id written more than once."""
    counts = Counter(str(i) for i in ids)
    return {k: n for k, n in counts.items() if n > 1}


def _column(uris: list[str], name: str, opts) -> np.ndarray:
    import pyarrow.parquet as pq

    if not uris:
        return np.zeros(0, dtype=np.int64)
    fs, _ = storage.arrow_fs(uris[0], opts)
    return np.concatenate([pq.read_table(storage.arrow_fs(u, opts)[1], columns=[name], filesystem=fs)[name]
                           .to_numpy() for u in uris])
