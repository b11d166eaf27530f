"""Decoding SA-1B-sized COCO RLE masks: pycocotools at full resolution vs. pixelclip's run-space resize.

    python bench/rle_resize.py
    python bench/rle_resize.py --masks 100 --repeats 9 --seed 0

Builds a synthetic SA-1B-like image: 1500 x 2250, 100 blob masks (unions of 1-3 ellipses and
rectangles, radii log-uniform from 1% to 30% of the short side, so a few masks are large and most
are small), encoded to compressed RLE strings with pycocotools. Then times (median of --repeats runs):

* pycocotools ``decode`` of all masks at full resolution (what resizing after decoding would need);
* ``decode_resized_many`` straight to 750 x 1125 and to 256 x 384;
* the floor of a fresh [N, 750, 1125] bool array (``np.zeros`` plus touching every page), which the
  750 x 1125 output cannot beat.

Checks on the way that the fast path equals nearest sampling of the pycocotools decode.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from pycocotools import mask as mask_utils

from pixelclip.data.rle_resize import decode_resized_many

H, W = 1500, 2250


def blob_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """bool [h, w]: union of 1-3 ellipses / rectangles near a random centre, sizes log-uniform."""
    m = np.zeros((h, w), dtype=bool)
    cy, cx = rng.uniform(0, h), rng.uniform(0, w)
    r = np.exp(rng.uniform(np.log(0.01), np.log(0.3))) * min(h, w)
    for _ in range(rng.integers(1, 4)):
        y, x = cy + rng.normal(0, r / 2), cx + rng.normal(0, r / 2)
        ry, rx = r * rng.uniform(0.4, 1.0), r * rng.uniform(0.4, 1.0)
        y0, y1 = int(max(y - ry, 0)), int(min(y + ry + 1, h))
        x0, x1 = int(max(x - rx, 0)), int(min(x + rx + 1, w))
        if y0 >= y1 or x0 >= x1:
            continue
        if rng.random() < 0.5:  # rectangle
            m[y0:y1, x0:x1] = True
        else:  # ellipse, evaluated on its bounding box only
            yy, xx = np.ogrid[y0:y1, x0:x1]
            m[y0:y1, x0:x1] |= ((yy - y) / ry) ** 2 + ((xx - x) / rx) ** 2 <= 1.0
    return m


def nearest(n: int, n2: int) -> np.ndarray:
    return ((2 * np.arange(n2) + 1) * n) // (2 * n2)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (caches, page pools)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--masks", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    masks = [blob_mask(rng, H, W) for _ in range(args.masks)]
    rles = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    strings = [r["counts"].decode() for r in rles]  # as read from SA-1B JSON
    n_runs = sum(len(s) for s in strings)
    cover = float(np.mean([m.mean() for m in masks]))
    print(f"{args.masks} masks {H}x{W}: mean area {cover:.1%} of the image, {n_runs / args.masks:.0f} chars/mask")

    # Correctness on this data: the fast path equals nearest sampling of the full decode.
    full = mask_utils.decode(rles).transpose(2, 0, 1).astype(bool)  # [N, H, W]
    for h2, w2 in ((750, 1125), (256, 384)):
        got = decode_resized_many(strings, (H, W), (h2, w2))
        assert np.array_equal(got, full[:, nearest(H, h2)][:, :, nearest(W, w2)]), (h2, w2)

    t_coco = median_ms(lambda: mask_utils.decode(rles), args.repeats)
    print(f"pycocotools decode, full res {H}x{W}:        {t_coco:8.2f} ms")
    for h2, w2 in ((750, 1125), (256, 384)):
        t = median_ms(lambda h2=h2, w2=w2: decode_resized_many(strings, (H, W), (h2, w2)), args.repeats)
        print(f"decode_resized_many -> {h2}x{w2}:           {t:8.2f} ms   ({t_coco / t:5.1f}x faster)")

    def floor() -> None:
        out = np.zeros((args.masks, 750, 1125), dtype=bool)
        out[:, :, 0] = True  # touch every row, hence every page
    print(f"floor: fresh bool [{args.masks}, 750, 1125] array:  {median_ms(floor, args.repeats):8.2f} ms")


if __name__ == "__main__":
    main()
