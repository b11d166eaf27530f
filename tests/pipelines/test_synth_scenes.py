"""SynthScenes: the generator's invariants, its mask modes, and its files read by the real readers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.cli import run_command
from pipelines.stages.prepare import iter_tar_pairs
from pipelines.synth.scenes import write_eval_split, write_train_shards
from pixelclip.data import rle
from pixelclip.data.sa1b import ConvertOptions, convert_sample
from pixelclip.eval.datasets import open_benchmark
from pixelclip.synth import (
    CLASS_NAMES,
    NUM_STUFF,
    STUFF_NAMES,
    THING_NAMES,
    THINGS,
    SceneConfig,
    scene_at,
    scene_masks,
    scene_rng,
)

SMALL = SceneConfig(size=96)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """k-means on ~1000 points per image: extra threads only stall on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def scenes():
    return [scene_at(0, i) for i in range(12)]


def _is_partition(masks: np.ndarray) -> bool:
    return masks.dtype == bool and masks.ndim == 3 and bool((masks.sum(0) == 1).all())


def test_class_table():
    assert len(STUFF_NAMES) == NUM_STUFF == 6 and len(THING_NAMES) == len(THINGS) >= 16
    assert len(set(CLASS_NAMES)) == len(CLASS_NAMES) and all(n.isalpha() and n.islower() for n in CLASS_NAMES)


def test_seeded_and_deterministic():
    a, b, c = scene_at(3, 5), scene_at(3, 5), scene_at(3, 6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.label, b.label) and a.caption == b.caption
    assert np.array_equal(a.instances, b.instances)
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(scene_at(3, 5, "eval").image, a.image)  # splits are disjoint streams
    for mode in ("oversegmented", "kmeans"):
        m1 = scene_masks(a, mode, np.random.default_rng(1))
        m2 = scene_masks(b, mode, np.random.default_rng(1))
        assert np.array_equal(m1, m2)


def test_every_pixel_labelled_and_instances_partition(scenes):
    for s in scenes:
        S = 128
        assert s.image.shape == (S, S, 3) and s.image.dtype == np.uint8
        assert s.label.shape == (S, S) and s.label.dtype == np.int64
        assert s.label.min() >= 0 and s.label.max() < len(CLASS_NAMES)
        assert _is_partition(s.instances) and len(s.instance_labels) == len(s.instances)
        for mask, cls in zip(s.instances, s.instance_labels, strict=True):
            assert np.array_equal(mask, s.label == cls)  # each instance is exactly its label region
        n_things = int((s.instance_labels >= NUM_STUFF).sum())
        n_stuff = len(s.instance_labels) - n_things
        assert 1 <= n_things <= 3 and 1 <= n_stuff <= 3
        for m in s.instances[s.instance_labels >= NUM_STUFF]:
            ys, xs = np.nonzero(m)
            assert max(np.ptp(ys), np.ptp(xs)) + 1 >= 12  # things span several 8 px patches, not specks


def test_captions_name_exactly_the_classes_present(scenes):
    for s in scenes:
        words = set(s.caption.replace(",", " ").split())
        assert words & set(CLASS_NAMES) == set(s.class_names), s.caption
    assert len({s.caption.split(" a ")[0] for s in scenes}) > 1  # varied templates


def test_oversegmented_masks_refine_instances(scenes):
    more = 0
    for i, s in enumerate(scenes[:6]):
        pieces = scene_masks(s, "oversegmented", np.random.default_rng(i))
        assert _is_partition(pieces)
        inside = (pieces[:, None] & ~s.instances[None]).sum((2, 3)) == 0  # [M, N] piece inside instance
        assert (inside.sum(1) == 1).all()  # every piece inside exactly one instance
        more += len(pieces) > len(s.instances)
    assert more == 6


def test_kmeans_masks_cover_the_image(scenes):
    for i, s in enumerate(scenes[:4]):
        masks = scene_masks(s, "kmeans", np.random.default_rng(i))
        assert _is_partition(masks) and 2 <= len(masks) <= 10
        assert masks.any((1, 2)).all()


def test_bad_settings_name_the_field():
    with pytest.raises(ValueError, match="size"):
        SceneConfig(size=16)
    with pytest.raises(ValueError, match="things"):
        SceneConfig(things=(0.5, 0.6))
    with pytest.raises(ValueError, match="mask mode"):
        scene_masks(scene_at(0, 0, cfg=SMALL), "sam", np.random.default_rng(0))


def test_train_tars_read_by_prepare(tmp_path):
    uris = write_train_shards(str(tmp_path / "train"), shards=2, images=2, masks="oversegmented", cfg=SMALL, seed=4)
    captions = [json.loads(line) for line in (tmp_path / "train" / "captions.jsonl").read_text().splitlines()]
    assert [c["shard"] for c in captions] == ["sa_000000.tar"] * 2 + ["sa_000001.tar"] * 2
    seen = []
    for shard, uri in enumerate(uris):
        for i, (stem, pair, problem) in enumerate(iter_tar_pairs(uri, None)):
            assert problem is None
            rec = convert_sample(pair["jpg"], pair["json"], ConvertOptions(min_area=1))
            index = shard * 2 + i
            scene = scene_at(4, index, "train", SMALL)
            expected = scene_masks(scene, "oversegmented", scene_rng(4, index, "train-masks"))  # [M, 96, 96]
            got = np.stack([rle.counts_to_mask(m, 96, 96) for m in rec["masks"]])
            assert (rec["height"], rec["width"]) == (96, 96) and rec["image_id"] == stem
            assert {m.tobytes() for m in got} == {m.tobytes() for m in expected}  # the same unlabeled masks
            assert captions[index] == {"image_id": stem, "shard": f"sa_{shard:06d}.tar", "caption": scene.caption,
                                       "classes": scene.class_names}
            seen.append(stem)
    assert len(seen) == 4


def test_eval_split_read_by_open_benchmark(tmp_path):
    ids = write_eval_split(str(tmp_path), 3, SMALL, seed=2)
    names = (tmp_path / "class_names.txt").read_text().splitlines()
    assert names == list(CLASS_NAMES)
    ds = open_benchmark("ade20k-150", tmp_path, class_names=names)
    assert ds.layout == "detectron2" and ds.ids == ids and ds.class_names == names
    for i in range(3):
        sample, scene = ds[i], scene_at(2, i, "eval", SMALL)
        assert np.array_equal(sample.label, scene.label)  # PNG labels: exact
        assert np.abs(sample.image.astype(int) - scene.image).mean() < 4  # JPEG at quality 95


def test_cli_writes_both_splits(tmp_path, capsys):
    run_command(["synth-scenes", "-o", str(tmp_path), "--train-shards", "1", "--images-per-shard", "2", "--eval", "2",
                 "--masks", "kmeans", "--size", "64", "--seed", "1"])
    assert "wrote 2 training scenes" in capsys.readouterr().out
    summary = json.loads((tmp_path / "synth_scenes.json").read_text())
    assert summary["masks"] == "kmeans" and summary["scene"]["size"] == 64
    assert (tmp_path / "train" / "sa_000000.tar").exists()
    assert len(open_benchmark("ade20k-150", tmp_path / "eval", class_names=CLASS_NAMES)) == 2
