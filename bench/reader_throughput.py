"""Training-reader throughput per CPU core: a training-ready record -> weak/strong views + masks.

    python bench/reader_throughput.py [--preset convnext_b] [--images 4] [--seconds 20]

Records are made by `convert_sample` from synthetic SA-1B-size samples (1500x2250, 100 masks ->
750x1125). One process with one torch thread runs `pipelines.stages.train.reader.decode_row` (JPEG decode, the
shared geometry and the weak / strong photometrics of `ViewAugment`, masks sampled from their runs,
packing) in a loop and reports images/s and where the time goes. Target (convnext_b, 640 px crops):
at least 40 images/s per core.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import pixelclip
from pipelines.stages.train.reader import decode_row
from pipelines.synth.sa1b import _jpeg, sa1b_json, synth_image
from pixelclip.data.augment import ViewAugment
from pixelclip.data.sa1b import ConvertOptions, convert_sample


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="convnext_b")
    p.add_argument("--images", type=int, default=4, help="distinct records cycled through")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--masks", type=int, default=100, help="masks per SA-1B image (SA-1B: about 100, some 400+)")
    p.add_argument("--min-area", type=int, default=1, help="ConvertOptions.min_area (default: every mask)")
    p.add_argument("--max-masks", type=int, default=0, help="ConvertOptions.max_masks (default 0: all)")
    p.add_argument("--crop-view", action="store_true",
                   help="as for --masks dino: the records' masks unread, the weak view also at the crop's size")
    a = p.parse_args()
    torch.set_num_threads(1)
    cfg = pixelclip.load_config(a.preset)
    rng = np.random.default_rng(0)
    records = []
    for i in range(a.images):
        rgb, masks = synth_image(rng, 1500, 2250, a.masks)
        opts = ConvertOptions(min_area=a.min_area, max_masks=a.max_masks)
        rec = convert_sample(_jpeg(rgb), json.dumps(sa1b_json(i, 1500, 2250, masks, rng)), opts)
        records.append({**rec, "image_id": f"sa_{i}"})
    augment = ViewAugment(cfg.data, cfg.backbone.image_size, crop_view=a.crop_view)
    decode_row(records[0], augment)  # warm-up
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < a.seconds:
        decode_row(records[n % len(records)], augment)
        n += 1
    dt = time.perf_counter() - t0
    r = records[0]
    print(f"# preset={a.preset}: stored {r['height']}x{r['width']} JPEG, {r['num_masks']} masks -> "
          f"views {cfg.backbone.image_size}px (short side {cfg.data.resize_short}, crop {cfg.data.crop}), "
          f"masks {cfg.data.mask_size}px; 1 process, 1 torch thread, {n} samples in {dt:.1f} s")
    print(f"reader throughput: {n / dt:.1f} images/s per core ({1000 * dt / n:.1f} ms per image; target >= 40/s)")
    size = np.mean([len(x["image"]) + sum(len(m) for m in x["masks"]) for x in records])
    masks_kib = np.mean([sum(len(m) for m in x["masks"]) for x in records]) / 1024
    print(f"record: {size / 1024:.0f} KiB ({masks_kib:.0f} KiB of masks, "
          f"{np.mean([x['num_masks'] for x in records]):.0f} masks kept of {a.masks})")


if __name__ == "__main__":
    main()
