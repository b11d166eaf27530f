"""The arguments `train` and `tune` share, and what they become in the job configurations."""

from __future__ import annotations


def add_training_arguments(p, what: str) -> None:
    """`what` is "run" (train) or "sweep" (tune)."""
    p.add_argument("--data", required=True, help="training-ready shards (s3:// or folder)")
    p.add_argument("--storage", required=True, help=f"where {what}s and checkpoints live (s3:// or folder)")
    p.add_argument("--name", required=True, help=f"{what} name; the same name resumes the {what}")
    p.add_argument("--preset", default="tiny", help="the model configuration: a preset or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="a dotted override of the model configuration; repeatable")
    p.add_argument("--workers", type=int, default=2, help="training workers" + (" per trial" * (what == "sweep")))
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="logical CPUs each worker reserves")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between reported metrics")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="on GPUs: bf16 autocast (the clustering stays fp32/fp64) or fp32 as the authors")
    v = p.add_argument_group("validation while training (zero-shot mIoU, metric val_miou)")
    v.add_argument("--validate", metavar="NAME=ROOT", help="a labelled benchmark split, e.g. ade20k-150=s3://data/ade")
    v.add_argument("--validate-every", type=int, default=100, help="steps between validations")
    v.add_argument("--validate-limit", type=int, default=64, help="the first N images of the split")
    v.add_argument("--validate-class-names", help="a file (one class per line) with the split's own classes")
    v.add_argument("--validate-split", default="val", help="the benchmark's split")
    m = p.add_argument_group("masks computed on each training crop (the paper's DINO recipe)")
    m.add_argument("--masks", choices=["stored", "dino"], default="stored",
                   help="stored: the records' own masks; dino: DINO k-means on every crop, on GPU actors")
    m.add_argument("--dino-weights", help="DINO ViT-S/16 weights, local or s3:// (dino_deitsmall16_pretrain.pth)")
    m.add_argument("--dino-arch", default="vit_small_patch16_224.dino",
                   help="timm architecture of the weights (tiny: a small random ViT, for tests)")
    m.add_argument("--dino-k", type=int, default=16, help="k-means clusters per crop")
    m.add_argument("--dino-actors", type=int, help="DINO actors (default: one per training worker)")
    m.add_argument("--dino-gpu", type=float, default=0.25,
                   help="each DINO actor's share of a GPU; each worker takes the rest of its GPU")
    m.add_argument("--allow-random-weights", action="store_true", help="tests only: masks from an untrained DINO")


def validation(args) -> dict | None:
    """`--validate NAME=ROOT` (+ every / limit / class names) -> the job's `validation`."""
    if not args.validate:
        return None
    from pipelines.stages.evaluate.job import parse_benchmarks

    ((name, root),) = parse_benchmarks([args.validate]).items()
    return {"benchmark": name, "root": root, "every": args.validate_every, "limit": args.validate_limit,
            "class_names": args.validate_class_names, "split": args.validate_split}


def masks(args) -> dict | None:
    """`--masks dino` (+ weights, actors, GPU share) -> the job's `masks`; None for the records' masks."""
    if args.masks == "stored":
        return None
    return {"source": args.masks, "weights": args.dino_weights, "arch": args.dino_arch, "k": args.dino_k,
            "actors": args.dino_actors, "gpus_per_actor": args.dino_gpu,
            "allow_random_weights": args.allow_random_weights}
