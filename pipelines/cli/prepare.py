"""SA-1B shards (or JPEGs) to training-ready Parquet shards with Ray Data; corrupt samples are skipped
and counted."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.cli.common import add_address

HELP = "SA-1B shards or JPEGs -> training-ready Parquet shards (Ray Data)"


def add_arguments(p) -> None:
    p.add_argument("--input", required=True, help="s3:// prefix or folder of sa_*.tar (or JPEGs for dino/sam)")
    p.add_argument("-o", "--output", required=True, help="s3:// prefix or folder for the Parquet shards")
    p.add_argument("--source", choices=["sa1b", "dino", "sam", "images"], default="sa1b",
                   help="sa1b: the shards' own masks; dino / sam: masks computed per image (GPU actors); images: "
                        "no masks, for train --masks dino (masks per crop)")
    p.add_argument("--sample", type=float, default=1.0, help="fraction of images kept (the paper: 0.05)")
    p.add_argument("--seed", type=int, default=0, help="the sample's seed (a hash of it and each image's id)")
    p.add_argument("--short-side", type=int, default=750, help="stored short side, px")
    p.add_argument("--min-area", type=int, default=1,
                   help="smallest mask kept, in stored pixels (1: every mask, as the authors)")
    p.add_argument("--max-masks", type=int, default=0, help="keep only the largest N masks per image (0: all)")
    p.add_argument("--weights", help="DINO / SAM weights: local or s3:// path")
    p.add_argument("--sam-model-type", default="vit_b", choices=["vit_b", "vit_l", "vit_h"],
                   help="the SAM architecture of --weights")
    p.add_argument("--allow-random-weights", action="store_true", help="tests only: untrained mask models")
    p.add_argument("--overwrite", action="store_true", help="replace Parquet files already in --output")
    add_address(p)
    p.add_argument("--summary", help="also write the run summary as JSON to this local file")


def run(args) -> None:
    from pipelines.ray_errors import connect
    from pipelines.stages.prepare import PrepareConfig, format_summary, run_prepare
    from pixelclip.data.sa1b import ConvertOptions

    convert = ConvertOptions(short_side=args.short_side, min_area=args.min_area, max_masks=args.max_masks)
    cfg = PrepareConfig(input=args.input, output=args.output, source=args.source, sample=args.sample,
                        seed=args.seed, convert=convert, weights=args.weights,
                        allow_random_weights=args.allow_random_weights, sam_model_type=args.sam_model_type,
                        overwrite=args.overwrite).validate()
    connect(args.address)
    summary = run_prepare(cfg)
    print(format_summary(summary))
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
