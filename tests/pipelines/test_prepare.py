"""The prepare stage end to end: real SeaweedFS, local Ray, synthetic SA-1B shards with bad members."""

from __future__ import annotations

import io
import json
import tarfile
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import pixelclip
from pipelines import storage
from pipelines.stages.prepare import (
    PrepareConfig,
    find_duplicates,
    format_summary,
    iter_tar_pairs,
    keep_sample,
    run_prepare,
)
from pipelines.stages.train.reader import iter_batches, training_dataset
from pipelines.synth.sa1b import CORRUPTIONS, write_shards
from pixelclip.data import rle
from pixelclip.data.sa1b import ConvertOptions

pytestmark = pytest.mark.slow


OPTS = ConvertOptions(short_side=48, min_area=4, max_masks=8)


@pytest.fixture(scope="module")
def raw(store):
    corrupt = {k: 1 for k in CORRUPTIONS}
    uris = write_shards("s3://data/raw", shards=3, images=16, size=(64, 96), masks=10, seed=1,
                        corrupt=corrupt, truncate_last=True, opts=store)
    return uris


def _pairs_before_cut(uri, opts) -> tuple[int, int]:
    """Independent count of the (whole jpg+json pairs, lone members) in a truncated tar."""
    data = storage.read_bytes(uri, opts)
    names = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as tar:
        try:
            for m in tar:
                tar.extractfile(m).read()
                names.append(m.name)
        except (tarfile.TarError, OSError):
            pass
    stems = [n.rsplit(".", 1)[0] for n in names]
    return sum(stems.count(s) == 2 for s in set(stems)), sum(stems.count(s) == 1 for s in set(stems))


def test_sa1b_shards_with_bad_members(store, ray_local, raw):
    cfg = PrepareConfig(input="s3://data/raw/", output="s3://data/ready/", convert=OPTS)
    s = run_prepare(cfg, store)
    good_in_cut, lone_in_cut = _pairs_before_cut(raw[2], store)
    assert 0 < good_in_cut < 16
    reason = {"truncated_jpeg": "bad_image", "not_jpeg": "bad_image"}  # corruption -> reason counted
    expected_skips = Counter(reason.get(k, k) for k in CORRUPTIONS) + Counter({"missing_pair": lone_in_cut})
    assert s["skipped"] == dict(expected_skips), s["skipped"]
    assert s["shard_errors"] == 1  # the cut tar: counted apart, it is no image
    assert s["images_written"] == (16 - len(CORRUPTIONS)) + 16 + good_in_cut
    assert s["images_in"] == s["images_written"] + s["sampled_out"] + s["skipped_total"]  # the line adds up
    assert f"images in {s['images_in']} = written {s['images_written']} + sampled out 0 + skipped" in \
        format_summary(s) and "1 shard(s) cut short by a corrupt tar" in format_summary(s)
    assert s["duplicate_ids"] == 0 and "WARNING" not in format_summary(s)
    assert {e["reason"] for e in s["examples"]} == set(expected_skips) | {"corrupt_tar"}
    assert all(e["shard"].startswith("s3://data/raw/sa_") for e in s["examples"])

    files = storage.list_files("s3://data/ready/", (".parquet",), store)
    fs, _ = storage.arrow_fs(files[0], store)
    table = pq.ParquetDataset([storage.arrow_fs(f, store)[1] for f in files], filesystem=fs).read()
    assert table.num_rows == s["images_written"]
    assert len(set(table["image_id"].to_pylist())) == table.num_rows
    row = table.slice(0, 1).to_pylist()[0]
    assert (row["height"], row["width"], row["orig_height"], row["orig_width"]) == (48, 72, 64, 96)
    im = Image.open(io.BytesIO(row["image"]))
    assert im.format == "JPEG" and im.size == (72, 48)
    assert row["num_masks"] == len(row["masks"]) == len(row["mask_area"]) <= 8
    areas = [rle.area(rle.decode_counts(m)) for m in row["masks"]]
    assert areas == row["mask_area"] and areas == sorted(areas, reverse=True) and min(areas) >= 4

    # the same record straight from the raw JSON: masks are the nearest-resized SA-1B masks
    stem = row["image_id"]
    pairs = {st: p for st, p, _ in iter_tar_pairs(row["source"], store) if p is not None}
    doc = json.loads(pairs[stem]["json"])
    full = [rle.counts_to_mask(rle.decode_counts(a["segmentation"]["counts"]), 64, 96) for a in doc["annotations"]]
    rows_idx = (np.arange(48) + 0.5) * 64 / 48
    cols_idx = (np.arange(72) + 0.5) * 96 / 72
    small = [m[rows_idx.astype(int)][:, cols_idx.astype(int)] for m in full]
    first = rle.counts_to_mask(rle.decode_counts(row["masks"][0]), 48, 72)
    assert any(np.array_equal(first, m) for m in small)

    # the training reader gives what Trainer.step takes
    tcfg = pixelclip.load_config("tiny", ["data.resize_short=64", "data.crop=48"])
    ds = training_dataset("s3://data/ready/", tcfg, store, seed=0)
    batch = next(iter_batches(ds, batch_size=4))
    assert batch["weak"].shape == (4, 3, 64, 64) and batch["weak"].dtype == torch.float32
    assert batch["masks"].dtype == torch.bool and batch["masks"].shape[-2:] == (64, 64)
    assert batch["keep"].shape == (4, 64, 64) and batch["masks"].any(dim=(2, 3)).sum() > 0
    task = pixelclip.build_pixelclip(tcfg)
    m = pixelclip.Trainer(task, tcfg).step(**batch)
    assert np.isfinite(m["loss"]) and m["masks"] > 0

    # re-running into the same output is refused unless asked
    with pytest.raises(ValueError, match="overwrite"):
        run_prepare(cfg, store)


def test_a_sample_in_two_shards_is_reported(store, ray_local, raw):
    """The same shard under two names: every image is written twice, and the summary says so."""
    data = storage.read_bytes(raw[1], store)  # the shard without corruptions
    for name in ("sa_000100.tar", "sa_000101.tar"):
        storage.write_bytes(f"s3://data/raw-dup/{name}", data, store)
    s = run_prepare(PrepareConfig(input="s3://data/raw-dup/", output="s3://data/ready-dup/", convert=OPTS), store)
    assert s["images_written"] == 32 and s["duplicate_ids"] == 16
    text = format_summary(s)
    assert "WARNING: 16 record(s) repeat a sample id already written" in text and " x2" in text


def test_find_duplicates_counts_each_repeat():
    assert find_duplicates(["a", "b", "a", "c", "a", "b"]) == {"a": 3, "b": 2}
    assert find_duplicates(["a", "b"]) == {}


def test_sampling_is_deterministic(store, ray_local, raw):
    cfg = PrepareConfig(input="s3://data/raw/", output="s3://data/sampled/", sample=0.5, seed=3, convert=OPTS)
    s = run_prepare(cfg, store)
    ids = set(_ids("s3://data/sampled/", store))
    assert ids and all(keep_sample(i, 0.5, 3) for i in ids)
    assert 0.2 < s["images_written"] / 48 < 0.8 and s["sampled_out"] > 0
    # every image is accounted for once every shard's counts have reached the stats actor
    assert s["images_in"] == s["images_written"] + s["sampled_out"] + s["skipped_total"]
    cfg.output, cfg.overwrite = "s3://data/sampled/", True
    run_prepare(cfg, store)
    assert set(_ids("s3://data/sampled/", store)) == ids


def _ids(uri, opts):
    files = storage.list_files(uri, (".parquet",), opts)
    out = []
    for f in files:
        fs, path = storage.arrow_fs(f, opts)
        out += pq.read_table(path, columns=["image_id"], filesystem=fs)["image_id"].to_pylist()
    return out


def test_fails_fast_on_bad_input(store, ray_local, raw):
    bad = storage.StorageOptions(endpoint_url=store.endpoint_url, access_key=store.access_key,
                                 secret_key="wrong-secret", region="us-east-1")
    with pytest.raises(storage.StorageError, match="rejected the credentials"):
        run_prepare(PrepareConfig(input="s3://data/raw/", output="s3://data/x/"), bad)
    with pytest.raises(storage.StorageError, match="does not exist"):
        run_prepare(PrepareConfig(input="s3://no-such-bucket/raw/", output="s3://data/x/"), store)
    with pytest.raises(storage.StorageError, match="no files"):
        run_prepare(PrepareConfig(input="s3://data/empty-prefix/", output="s3://data/x/"), store)
    with pytest.raises(ValueError, match=r"prepare\.source"):
        run_prepare(PrepareConfig(input="s3://data/raw/", output="s3://data/x/", source="nope"), store)
    with pytest.raises(ValueError, match=r"prepare\.weights"):
        run_prepare(PrepareConfig(input="s3://data/raw/", output="s3://data/x/", source="dino"), store)


@pytest.fixture(scope="module")
def photos(store):
    """A bucket prefix of plain JPEGs (no annotations), as users keep their own photos."""
    rng = np.random.default_rng(0)
    uris = []
    for i in range(5):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (60 + 4 * i, 80, 3), dtype=np.uint8)).save(buf, format="JPEG")
        uri = f"s3://data/photos/img_{i}.jpg"
        storage.write_bytes(uri, buf.getvalue(), store)
        uris.append(uri)
    storage.write_bytes("s3://data/photos/broken.jpg", b"\xff\xd8 not really a jpeg", store)
    return uris


def _mask_model_cfg(source, input_uri, output_uri, **kw):
    return PrepareConfig(input=input_uri, output=output_uri, source=source,
                         convert=ConvertOptions(short_side=48, min_area=1),
                         dino_k=4, dino_image_size=64, sam_model_type="tiny", batch_size=2,
                         sam_options={"points_per_side": 4, "pred_iou_thresh": 0.0,
                                      "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}, **kw)


# DINO only: the skipping of bad SA-1B members is the same code for every mask model (SAM runs on photos below)
@pytest.mark.parametrize("source", ["dino"])
def test_mask_model_sources_on_sa1b_shards(store, ray_local, raw, source, tmp_path):
    """DINO / SAM masks for the images of the synthetic SA-1B shards (their JSON is ignored): the
    broken JPEGs and the cut tar are skipped and counted, the rest reaches the training reader."""
    weights = None
    if source == "dino":  # weights from the object store, as users keep them
        from pixelclip.data.masks import DinoMasker

        local = tmp_path / "dino.safetensors"
        from safetensors.torch import save_file

        save_file(DinoMasker.from_weights(None, image_size=64).model.state_dict(), str(local))
        weights = "s3://data/weights/dino.safetensors"
        storage.upload(str(local), weights, store)
    cfg = _mask_model_cfg(source, "s3://data/raw/", f"s3://data/ready-{source}-tars/", weights=weights,
                          allow_random_weights=weights is None)
    s = run_prepare(cfg, store)
    assert s["skipped"] == {"bad_image": 2} and s["shard_errors"] == 1, s["skipped"]
    assert s["images_written"] == s["images_in"] - 2 and s["images_written"] > 30
    tcfg = pixelclip.load_config("tiny", ["data.resize_short=64", "data.crop=48"])
    batch = next(iter_batches(training_dataset(f"s3://data/ready-{source}-tars/", tcfg, store, seed=0), 4))
    assert batch["weak"].shape == (4, 3, 64, 64) and batch["masks"].shape[0] == 4 and batch["masks"].any()


@pytest.mark.parametrize("source", ["dino", "sam"])
def test_mask_model_sources(store, ray_local, photos, source):
    """Plumbing with random weights: masks come from the model actors; a broken JPEG is skipped."""
    cfg = PrepareConfig(input="s3://data/photos/", output=f"s3://data/ready-{source}/", source=source,
                        allow_random_weights=True, convert=ConvertOptions(short_side=48, min_area=1),
                        dino_k=4, dino_image_size=64, sam_model_type="tiny", batch_size=2,
                        sam_options={"points_per_side": 4, "pred_iou_thresh": 0.0,
                                     "stability_score_thresh": 0.0, "box_nms_thresh": 1.0})
    s = run_prepare(cfg, store)
    assert s["images_in"] == 6 and s["skipped"] == {"bad_image": 1} and s["images_written"] == 5
    files = storage.list_files(f"s3://data/ready-{source}/", (".parquet",), store)
    fs, _ = storage.arrow_fs(files[0], store)
    rows = pq.ParquetDataset([storage.arrow_fs(f, store)[1] for f in files], filesystem=fs).read().to_pylist()
    assert {r["mask_source"] for r in rows} == {source}
    for r in rows:
        assert r["height"] == 48 and r["num_masks"] >= 1 and (r["orig_height"], r["orig_width"])[1] == 80
        masks = [rle.counts_to_mask(rle.decode_counts(m), r["height"], r["width"]) for m in r["masks"]]
        if source == "dino":  # k-means masks partition the image
            assert np.array_equal(np.sum(masks, axis=0), np.ones((r["height"], r["width"])))
