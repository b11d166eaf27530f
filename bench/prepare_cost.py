"""Per-image CPU cost of SA-1B sample -> training-ready record, against decoding the JPEG alone.

    python bench/prepare_cost.py [--size 1500x2250] [--masks 100] [--repeats 15]

Builds one synthetic sample at SA-1B size (real JPEG, real COCO RLE from pycocotools) and times, in
one process and one run: Pillow decoding the JPEG at full size (the reference), Pillow's draft
decode at half scale, pycocotools decoding the masks at full resolution (the naive mask path), and
`pixelclip.data.sa1b.convert_sample` (decode at reduced scale, masks resized in run space, mask
selection, JPEG re-encode at the stored resolution). Target: convert / full decode <= 1.0.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from pipelines.synth.sa1b import _jpeg, sa1b_json, synth_image
from pixelclip.data.sa1b import ConvertOptions, convert_sample


def _median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1500x2250")
    p.add_argument("--masks", type=int, default=100)
    p.add_argument("--short-side", type=int, default=750)
    p.add_argument("--repeats", type=int, default=15)
    a = p.parse_args()
    h, w = (int(v) for v in a.size.split("x"))
    rng = np.random.default_rng(0)
    rgb, masks = synth_image(rng, h, w, a.masks)
    doc = sa1b_json(1, h, w, masks, rng)
    jpg, js = _jpeg(rgb), json.dumps(doc).encode()
    rles = [{"size": [h, w], "counts": an["segmentation"]["counts"].encode()} for an in doc["annotations"]]
    opts = ConvertOptions(short_side=a.short_side)

    def full():
        Image.open(io.BytesIO(jpg)).convert("RGB").load()

    def draft():
        im = Image.open(io.BytesIO(jpg))
        im.draft("RGB", (w // 2, h // 2))
        im.convert("RGB").load()

    rec = convert_sample(jpg, js, opts)
    ms = {
        "Pillow full decode": _median_ms(full, a.repeats),
        "Pillow draft decode at 1/2": _median_ms(draft, a.repeats),
        f"pycocotools: {len(rles)} masks at full res": _median_ms(lambda: mask_utils.decode(rles),
                                                                  max(3, a.repeats // 3)),
        "convert_sample (record)": _median_ms(lambda: convert_sample(jpg, js, opts), a.repeats),
    }
    print(f"# {h}x{w} JPEG ({len(jpg) // 1024} KiB), {len(masks)} masks ({len(js) // 1024} KiB JSON) -> "
          f"{rec['height']}x{rec['width']}, {rec['num_masks']} masks kept; median of {a.repeats}, one process")
    for k, v in ms.items():
        print(f"{k:42s} {v:8.1f} ms")
    ratio = ms["convert_sample (record)"] / ms["Pillow full decode"]
    print(f"convert / full decode = {ratio:.2f} (target <= 1.0)")


if __name__ == "__main__":
    main()
