"""Tests of pixelclip.data.rle against pycocotools: compressed strings, masks, run-space nearest resize."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from pixelclip.data import rle, rle_resize

# pycocotools' decode trips a numpy 2 DeprecationWarning (its __array__ lacks a copy keyword).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools.*")


def coco(mask: np.ndarray) -> dict:
    """pycocotools' compressed RLE of a bool mask: {"size": [h, w], "counts": bytes}."""
    return mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))


def coco_from_counts(counts, h: int, w: int) -> str:
    """pycocotools' compressed string for explicit run lengths (its own rleToString)."""
    return mask_utils.frPyObjects({"size": [h, w], "counts": [int(c) for c in counts]}, h, w)["counts"].decode()


def reference_counts(mask: np.ndarray) -> list[int]:
    """Independent, slow run lengths: group the column-major pixels, prepend a 0-run if it starts with 1."""
    flat = mask.ravel(order="F").tolist()
    runs = [len(list(g)) for _, g in itertools.groupby(flat)]
    return [0, *runs] if flat and flat[0] else runs


def nearest(n: int, n2: int) -> np.ndarray:
    """Source index read by each target index: floor((i + 0.5) * n / n2), computed in floats here."""
    return np.floor((np.arange(n2) + 0.5) * n / n2).astype(np.int64)


def blob_mask(rng: np.random.Generator, h: int, w: int, n_shapes: int = 3) -> np.ndarray:
    """Union of random ellipses and rectangles (several 1-runs per column, holes between shapes)."""
    yy, xx = np.mgrid[0:h, 0:w]
    m = np.zeros((h, w), dtype=bool)
    for _ in range(n_shapes):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(1, h / 3 + 1), rng.uniform(1, w / 3 + 1)
        if rng.random() < 0.5:
            m |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        else:
            m |= (np.abs(yy - cy) <= ry) & (np.abs(xx - cx) <= rx)
    return m


def special_masks(h: int, w: int) -> dict[str, np.ndarray]:
    empty = np.zeros((h, w), dtype=bool)
    first = empty.copy()
    first[0, 0] = True  # first run of 0s has length 0
    last = empty.copy()
    last[-1, -1] = True
    middle = empty.copy()
    middle[h // 2, w // 2] = True
    stripes = empty.copy()
    stripes[::2] = True  # every column alternates: many runs of length 1
    return {"empty": empty, "full": ~empty, "first_pixel": first, "last_pixel": last,
            "single_pixel": middle, "stripes": stripes}


def random_masks(seed: int, h: int, w: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    masks = [blob_mask(rng, h, w, n) for n in (1, 2, 4, 6)]
    masks += [rng.random((h, w)) < p for p in (0.02, 0.5, 0.97)]  # noise masks
    return masks + list(special_masks(h, w).values())


# ----------------------------------------------------------------------------------------------
# Compressed strings.

@pytest.mark.parametrize("seed,h,w", [(0, 1, 1), (1, 7, 5), (2, 40, 33), (3, 97, 150), (4, 300, 1)])
def test_strings_equal_pycocotools(seed, h, w):
    for mask in random_masks(seed, h, w):
        ref = coco(mask)
        counts = rle.decode_counts(ref["counts"])
        assert counts.dtype == np.int64
        assert counts.tolist() == reference_counts(mask)
        assert rle.decode_counts(ref["counts"].decode()).tolist() == counts.tolist()  # str and bytes
        assert rle.encode_counts(counts) == ref["counts"].decode()


def test_large_counts_and_negative_deltas():
    # Values of 1 to 7 chunks and deltas of both signs (x[i] - x[i-2] < 0 from index 3 on).
    counts = [0, 3, 2_000_000, 1, 17, 5, 1_000_000_000, 2, 16, 1, 15, 100_000, 16, 31, 32, 33, 7]
    h, w = sum(counts), 1
    expected = coco_from_counts(counts, h, w)
    assert rle.encode_counts(np.array(counts)) == expected
    assert len(expected) > 2 * len(counts)  # several chunks per value for the big ones
    assert rle.decode_counts(expected).tolist() == counts  # pycocotools' own decoder overflows above 2**30


def test_single_pixel_in_a_large_mask():
    h, w = 1500, 2250
    mask = np.zeros((h, w), dtype=bool)
    mask[700, 1800] = True
    ref = coco(mask)
    counts = rle.decode_counts(ref["counts"])
    assert counts.tolist() == [1800 * h + 700, 1, h * w - 1800 * h - 701]
    assert rle.encode_counts(counts) == ref["counts"].decode()
    assert rle.area(ref["counts"]) == 1


def test_encode_counts_matches_pycocotools_on_random_counts():
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 5, 50):
        counts = rng.integers(0, 10 ** rng.integers(1, 8, size=n), size=n)
        counts[1:] = np.maximum(counts[1:], 1)
        total = int(counts.sum())
        s = rle.encode_counts(counts)
        assert s == coco_from_counts(counts, total, 1)
        assert rle.decode_counts(s).tolist() == counts.tolist()


def test_empty_zero_size_mask():
    assert rle.mask_to_counts(np.zeros((0, 3), dtype=bool)).tolist() == [0]
    assert rle.encode_counts(np.array([0])) == coco(np.zeros((0, 3), dtype=bool))["counts"].decode()


# ----------------------------------------------------------------------------------------------
# Masks.

@pytest.mark.parametrize("seed,h,w", [(10, 1, 9), (11, 23, 31), (12, 120, 80)])
def test_masks_equal_pycocotools(seed, h, w):
    for mask in random_masks(seed, h, w):
        ref = coco(mask)
        counts = rle.mask_to_counts(mask)
        assert counts.tolist() == reference_counts(mask)
        assert rle.encode_counts(counts) == ref["counts"].decode()
        decoded = rle.counts_to_mask(counts, h, w)
        assert decoded.shape == (h, w) and decoded.dtype == bool
        assert np.array_equal(decoded, mask_utils.decode(ref).astype(bool))
        assert np.array_equal(rle.counts_to_mask(ref["counts"], h, w), mask)  # straight from the string
        assert rle.area(counts) == int(mask.sum()) == int(mask_utils.area(ref))


def test_mask_to_counts_non_contiguous_input():
    mask = blob_mask(np.random.default_rng(13), 50, 60)
    view = mask[::2, 1::3]  # strided view
    assert rle.mask_to_counts(view).tolist() == reference_counts(np.ascontiguousarray(view))
    assert rle.mask_to_counts(np.asfortranarray(mask)).tolist() == reference_counts(mask)


# ----------------------------------------------------------------------------------------------
# Nearest resize in run space.

RESIZES = [
    ((60, 90), (30, 45)),  # exact halving
    ((61, 89), (17, 23)),  # non-integer down
    ((37, 53), (100, 70)),  # up (rows and columns sampled repeatedly)
    ((45, 45), (45, 45)),  # identity
    ((50, 80), (7, 160)),  # down in rows, up in columns
    ((1, 1), (3, 4)),
    ((30, 1), (1, 5)),
]


@pytest.mark.parametrize("size,new_size", RESIZES)
def test_resize_equals_nearest_sampling(size, new_size):
    (h, w), (h2, w2) = size, new_size
    rows, cols = nearest(h, h2), nearest(w, w2)
    masks = random_masks(h * 1000 + w, h, w)
    strings = [coco(m)["counts"] for m in masks]
    expected = [mask_utils.decode(coco(m)).astype(bool)[rows][:, cols] for m in masks]
    for s, exp in zip(strings, expected, strict=True):
        counts = rle_resize.resize_counts(rle.decode_counts(s), size, new_size)
        assert counts.tolist() == reference_counts(exp)
        assert np.array_equal(rle.counts_to_mask(counts, h2, w2), exp)
        assert np.array_equal(rle_resize.decode_resized(s, size, new_size), exp)
    many = rle_resize.decode_resized_many(strings, size, new_size)
    assert many.shape == (len(masks), h2, w2) and many.dtype == bool and many.flags.c_contiguous
    assert np.array_equal(many, np.stack(expected))


def test_decode_resized_many_mixed_inputs():
    rng = np.random.default_rng(21)
    h, w, h2, w2 = 70, 110, 31, 47
    masks = [blob_mask(rng, h, w, 4) for _ in range(5)]
    inputs = [coco(masks[0])["counts"], coco(masks[1])["counts"].decode(), rle.mask_to_counts(masks[2]),
              reference_counts(masks[3]), coco(masks[4])["counts"]]
    got = rle_resize.decode_resized_many(inputs, (h, w), (h2, w2))
    rows, cols = nearest(h, h2), nearest(w, w2)
    assert np.array_equal(got, np.stack([m[rows][:, cols] for m in masks]))
    assert rle_resize.decode_resized_many([], (h, w), (h2, w2)).shape == (0, h2, w2)


def test_fill_strategies_agree(monkeypatch):
    """Bounding-box comparisons and per-pixel scatter (chosen per mask by a cost model) give the same
    masks; force each in turn on blob, noise and upscaled (multi-piece column) cases."""
    rng = np.random.default_rng(22)
    h, w = 120, 170
    masks = [blob_mask(rng, h, w, n) for n in (1, 3, 8)] + [rng.random((h, w)) < 0.4]
    masks += list(special_masks(h, w).values())
    strings = [coco(m)["counts"] for m in masks]
    for h2, w2 in ((60, 85), (41, 300), (250, 57)):
        exp = np.stack([m[nearest(h, h2)][:, nearest(w, w2)] for m in masks])
        monkeypatch.setattr(rle_resize, "_SCATTER_PIXEL_NS", 0.0)  # never worth a box: all pixel by pixel
        assert np.array_equal(rle_resize.decode_resized_many(strings, (h, w), (h2, w2)), exp)
        monkeypatch.setattr(rle_resize, "_SCATTER_PIXEL_NS", 1e12)  # always a box
        assert np.array_equal(rle_resize.decode_resized_many(strings, (h, w), (h2, w2)), exp)


def test_sa1b_sized_mask():
    rng = np.random.default_rng(23)
    h, w = 1500, 2250
    mask = np.zeros((h, w), dtype=bool)
    mask[200:1100, 300:1700] = blob_mask(rng, 900, 1400, 5)
    s = coco(mask)["counts"].decode()
    for h2, w2 in ((750, 1125), (256, 384)):
        exp = mask[nearest(h, h2)][:, nearest(w, w2)]
        assert np.array_equal(rle_resize.decode_resized(s, (h, w), (h2, w2)), exp)
        assert rle_resize.resize_counts(s, (h, w), (h2, w2)).tolist() == reference_counts(exp)


def test_integer_and_float_sampling_agree():
    # The module samples with exact integer arithmetic; the float formula gives the same indices, and
    # first[r] counts the target indices reading a source index below r.
    for n, n2 in itertools.product((1, 2, 3, 7, 1500, 2250), (1, 5, 256, 384, 750, 1125, 3000)):
        src, first = rle_resize._sampling(n, n2)
        assert src.tolist() == nearest(n, n2).tolist()
        r = np.arange(n + 1)
        assert np.array_equal(first, (src[None, :] < r[:, None]).sum(axis=1))


# ----------------------------------------------------------------------------------------------
# Bad input.

@pytest.mark.parametrize("bad", ["0 1", "01p", "/", "abc~", b"12\x7f", "0é"])
def test_invalid_characters(bad):
    with pytest.raises(ValueError, match="invalid character"):
        rle.decode_counts(bad)


def test_truncated_value():
    assert rle.decode_counts("1P0").tolist() == [1, 0]  # 'P' = 48 + 32: continues into '0'
    with pytest.raises(ValueError, match="truncated"):
        rle.decode_counts("1P")  # last char has the continuation bit
    with pytest.raises(ValueError, match="truncated RLE string 1"):
        rle_resize.decode_resized_many(["0", "1P", "2"], (1, 1), (1, 1))


def test_counts_not_summing_to_size():
    with pytest.raises(ValueError, match=r"sum to 3.*2x2 has 4 pixels"):
        rle.counts_to_mask(np.array([1, 2]), 2, 2)
    with pytest.raises(ValueError, match=r"sum to 5.*4 pixels"):
        rle_resize.resize_counts(np.array([1, 2, 2]), (2, 2), (1, 1))
    s = coco(np.ones((3, 3), dtype=bool))["counts"]
    with pytest.raises(ValueError, match=r"mask 1 .*sum to 9.*12 pixels"):
        rle_resize.decode_resized_many([coco(np.ones((3, 4), dtype=bool))["counts"], s], (3, 4), (2, 2))


def test_negative_counts():
    with pytest.raises(ValueError, match="negative"):
        rle.counts_to_mask(np.array([3, -1, 2]), 2, 2)
    neg = rle.encode_counts(np.array([2, 3, -1]))  # a string decoding to a negative count
    with pytest.raises(ValueError, match="negative"):
        rle_resize.decode_resized(neg, (2, 2), (1, 1))


def test_bad_sizes():
    with pytest.raises(ValueError, match="positive"):
        rle_resize.decode_resized("0", (0, 0), (1, 1))
    with pytest.raises(ValueError, match="positive"):
        rle_resize.resize_counts(np.array([4]), (2, 2), (0, 3))


def test_sample_many_and_rle_masks_match_dense_indexing():
    rng = np.random.default_rng(7)
    h, w = 37, 53
    masks = [rng.random((h, w)) > 0.6, np.zeros((h, w), bool), np.ones((h, w), bool)]
    strings = [rle.encode_counts(rle.mask_to_counts(m)) for m in masks]
    rows = np.sort(rng.integers(0, h, 20))
    cols = np.sort(rng.integers(0, w, 31))
    got = rle_resize.sample_many(strings, (h, w), rows, cols)
    want = np.stack([m[rows][:, cols] for m in masks])
    assert np.array_equal(got, want)
    flipped = rle_resize.RLEMasks(strings, (h, w)).sample(rows, cols[::-1])
    assert np.array_equal(flipped, want[:, :, ::-1]) and rle_resize.RLEMasks(strings, (h, w)).shape == (3, h, w)
    with pytest.raises(ValueError, match="non-decreasing"):
        rle_resize.sample_many(strings, (h, w), rows[::-1], cols)


def test_augment_with_rle_masks_equals_dense_masks():
    import torch

    from pixelclip.config import DataConfig
    from pixelclip.data.augment import ViewAugment

    rng = np.random.default_rng(3)
    h, w = 90, 120
    dense = rng.random((5, h, w)) > 0.5
    strings = [rle.encode_counts(rle.mask_to_counts(m)) for m in dense]
    image = torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8))
    aug = ViewAugment(DataConfig(mask_size=48, resize_short=80, crop=64, flip_p=0.5), image_size=64)
    for seed in range(6):  # flips and crops vary with the seed
        a = aug(image, torch.from_numpy(dense), torch.Generator().manual_seed(seed))
        b = aug(image, rle_resize.RLEMasks(strings, (h, w)), torch.Generator().manual_seed(seed))
        assert torch.equal(a.masks, b.masks) and torch.equal(a.weak, b.weak)


def test_joined_resize_areas_and_encoding_match_the_per_mask_functions():
    rng = np.random.default_rng(11)
    h, w = 41, 67
    masks = [rng.random((h, w)) > 0.5, np.zeros((h, w), bool), np.ones((h, w), bool),
             _blob_free_rect(h, w, 3, 9, 40, 66)]
    strings = [rle.encode_counts(rle.mask_to_counts(m)) for m in masks]
    for new in ((20, 30), (41, 67), (77, 101)):
        counts, nvals = rle_resize.resize_joined(strings, (h, w), new)
        per_mask = [rle_resize.resize_counts(s, (h, w), new) for s in strings]
        assert [a.tolist() for a in np.split(counts, np.cumsum(nvals)[:-1])] == [p.tolist() for p in per_mask]
        assert rle.areas(counts, nvals).tolist() == [rle.area(p) for p in per_mask]
        assert rle.encode_many(counts, nvals) == [rle.encode_counts(p).encode() for p in per_mask]
    assert rle_resize.resize_many([], (h, w), (5, 5)) == []


def _blob_free_rect(h, w, r0, c0, r1, c1):
    m = np.zeros((h, w), bool)
    m[r0:r1, c0:c1] = True  # touches the last row/column: the mask ends with a 1-run
    m[r1:, c1:] = True
    return m
