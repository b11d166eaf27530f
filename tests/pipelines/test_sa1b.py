"""SA-1B samples -> training-ready records: which masks are kept."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.synth.sa1b import encode_jpeg, sa1b_json, synth_image
from pixelclip.data import rle
from pixelclip.data.sa1b import ConvertOptions, SampleError, convert_sample


def _sample(n_masks: int, tiny: int, h: int = 300, w: int = 400, seed: int = 0):
    """A sample with `n_masks` random shapes plus `tiny` masks of 2x2 pixels (they survive halving)."""
    rng = np.random.default_rng(seed)
    rgb, masks = synth_image(rng, h, w, n_masks)
    for i in range(tiny):
        m = np.zeros((h, w), dtype=bool)
        y, x = 4 + 6 * (i // 40), 4 + 8 * (i % 40)
        m[y:y + 2, x:x + 2] = True
        masks.append(m)
    return encode_jpeg(rgb), json.dumps(sa1b_json(7, h, w, masks, rng)), len(masks)


def test_every_mask_is_kept_by_default():
    """The authors keep every SA-1B mask (training drops the ones of at most one pixel per crop): a
    sample with 420 masks, 120 of them a few pixels, keeps all 420 at the stored resolution."""
    jpg, doc, n = _sample(300, 120)
    rec = convert_sample(jpg, doc, ConvertOptions(short_side=150))
    assert n == 420 and rec["num_masks"] == len(rec["masks"]) == n
    assert rec["mask_area"] == sorted(rec["mask_area"], reverse=True) and min(rec["mask_area"]) >= 1
    m = np.stack([rle.counts_to_mask(c, rec["height"], rec["width"]) for c in rec["masks"]])
    assert m.shape == (n, 150, 200) and (m.reshape(n, -1).sum(1) == rec["mask_area"]).all()


def test_cap_and_minimum_area_are_options():
    jpg, doc, n = _sample(60, 20)
    capped = convert_sample(jpg, doc, ConvertOptions(short_side=150, max_masks=16))
    everything = convert_sample(jpg, doc, ConvertOptions(short_side=150))
    assert capped["num_masks"] == 16 and capped["mask_area"] == everything["mask_area"][:16]  # the largest
    big = convert_sample(jpg, doc, ConvertOptions(short_side=150, min_area=64))
    assert 0 < big["num_masks"] <= n - 20 and min(big["mask_area"]) >= 64  # the 2x2 ones (1x1 stored) go
    with pytest.raises(SampleError, match="no_masks"):
        convert_sample(jpg, doc, ConvertOptions(short_side=150, min_area=10**6))
