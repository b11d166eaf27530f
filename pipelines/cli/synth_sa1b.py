"""Synthetic SA-1B shards in the real format (sa_*.tar: JPEG + annotation JSON with COCO RLE masks),
to a folder or an s3:// prefix."""

from __future__ import annotations

import argparse
import time

HELP = "write synthetic SA-1B shards"


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(x.isdigit() and int(x) > 0 for x in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: HxW in pixels, e.g. 96x128")
    return int(parts[0]), int(parts[1])


def add_arguments(p) -> None:
    p.add_argument("-o", "--output", required=True, help="output folder or s3:// prefix")
    p.add_argument("--shards", type=int, default=2, help="tar shards to write")
    p.add_argument("--images", type=int, default=8, help="images per shard")
    p.add_argument("--size", type=_size, default=(96, 128), metavar="HxW", help="each image's size (SA-1B: 1500x2250)")
    p.add_argument("--masks", type=int, default=12, help="masks per image (SA-1B: about 100)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same shards")


def run(args) -> None:
    from pipelines.synth.sa1b import write_shards

    (h, w), t0 = args.size, time.perf_counter()
    uris = write_shards(args.output, args.shards, args.images, (h, w), args.masks, args.seed)
    print(f"wrote {len(uris)} shards x {args.images} images ({h}x{w}, {args.masks} masks) in "
          f"{time.perf_counter() - t0:.1f} s under {args.output}")
