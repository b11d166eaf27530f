"""SynthScenes: SA-1B tars of procedurally drawn scenes with captions and unlabeled masks, and a labelled
evaluation split in the ADE20K layout, to a folder or an s3:// prefix."""

from __future__ import annotations

import time

HELP = "write SynthScenes: SA-1B tars with captions, a labelled split"


def add_arguments(p) -> None:
    from pixelclip.synth import MASK_MODES

    p.add_argument("-o", "--output", required=True, help="output folder or s3:// prefix")
    p.add_argument("--train-shards", type=int, default=4, help="SA-1B tars of training scenes (0: none)")
    p.add_argument("--images-per-shard", type=int, default=64, help="training scenes per tar")
    p.add_argument("--eval", type=int, default=64, help="labelled evaluation scenes (0: none)")
    p.add_argument("--masks", choices=MASK_MODES, default="instances", help="unlabeled masks of the training tars")
    p.add_argument("--size", type=int, default=128, help="image side, px")
    p.add_argument("--seed", type=int, default=0, help="the same seed draws the same scenes")


def run(args) -> None:
    import torch

    from pipelines.synth.scenes import write_scenes
    from pixelclip.synth import CLASS_NAMES, SceneConfig

    torch.set_num_threads(1)  # per-image k-means on ~1000 points: threads only add overhead (and stall when shared)
    t0 = time.perf_counter()
    s = write_scenes(args.output, args.train_shards, args.images_per_shard, args.eval, args.masks,
                     SceneConfig(size=args.size), args.seed)
    n_train = s["train"]["images"] if s["train"] else 0
    print(f"wrote {n_train} training scenes ({args.masks} masks) in {args.train_shards} shards and {args.eval} "
          f"evaluation scenes ({args.size} px, {len(CLASS_NAMES)} classes) in {time.perf_counter() - t0:.1f} s "
          f"under {args.output}")
