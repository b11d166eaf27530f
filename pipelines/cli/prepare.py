"""SA-1B shards (or JPEGs) to training-ready Parquet shards with Ray Data; corrupt samples are skipped
and counted."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.cli.common import add_address
from pipelines.cli.jobs import add_job_options, flags, load_job

HELP = "SA-1B shards or JPEGs -> training-ready Parquet shards (Ray Data)"


def add_arguments(p) -> None:
    p.add_argument("--input", help="s3:// prefix or folder of sa_*.tar (or JPEGs for dino/sam); required here "
                                   "or in --job")
    p.add_argument("-o", "--output", help="s3:// prefix or folder for the Parquet shards; required")
    add_job_options(p, "prepare", "convert.jpeg_quality=95 or sam_options.points_per_side=16")
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
    p.add_argument("--dino-k", type=int, default=16, help="k-means clusters per image (--source dino)")
    p.add_argument("--actors", type=int, help="mask-model actors (default: one per GPU, else one)")
    p.add_argument("--allow-random-weights", action="store_true", help="tests only: untrained mask models")
    p.add_argument("--overwrite", action="store_true", help="replace Parquet files already in --output")
    add_address(p)
    p.add_argument("--summary", help="also write the run summary as JSON to this local file")


def job_from(args):
    return load_job("prepare", args, flags(args, {
        "input": "input", "output": "output", "source": "source", "sample": "sample", "seed": "seed",
        "short_side": "convert.short_side", "min_area": "convert.min_area", "max_masks": "convert.max_masks",
        "weights": "weights", "sam_model_type": "sam_model_type", "allow_random_weights": "allow_random_weights",
        "dino_k": "dino_k", "actors": "actors", "overwrite": "overwrite"}))


def run(args) -> None:
    from pipelines.ray_errors import connect
    from pipelines.stages.prepare import format_summary, run_prepare

    cfg = job_from(args)
    connect(args.address)
    summary = run_prepare(cfg)
    print(format_summary(summary))
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=2))
