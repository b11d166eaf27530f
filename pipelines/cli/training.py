"""The arguments `train` and `tune` share, and what they become in the training job."""

from __future__ import annotations

from pipelines.cli.jobs import add_job_options, flags, given

# option dest -> field of the training job (pipelines.stages.train.job.TrainJobConfig)
TRAIN_FIELDS = {"data": "data", "workers": "workers", "cpus_per_worker": "cpus_per_worker",
                "checkpoint_every": "checkpoint_every", "log_every": "log_every", "precision": "precision",
                "max_failures": "max_failures", "placement": "placement", "seed": "seed",
                "use_gpu": "use_gpu", "experiment": "experiment"}
VALIDATION_FIELDS = {"validate_every": "every", "validate_limit": "limit", "validate_class_names": "class_names",
                     "validate_split": "split"}
MASK_FIELDS = {"masks": "source", "dino_weights": "weights", "dino_arch": "arch", "dino_k": "k",
               "dino_actors": "actors", "dino_gpu": "gpus_per_actor", "allow_random_weights": "allow_random_weights"}


def add_training_arguments(p, what: str) -> None:
    """`what` is "run" (train) or "sweep" (tune). Defaults are the training job's (`pixelclip config
    --job train`); a flag given on the command line overrides a `--job` file."""
    trial = " per trial" * (what == "sweep")
    p.add_argument("--data", help="training-ready shards (s3:// or folder); required here or in --job")
    p.add_argument("--storage", help=f"where {what}s and checkpoints live (s3:// or folder); required")
    p.add_argument("--name", help=f"{what} name; the same name resumes the {what}; required")
    p.add_argument("--preset", help="the model configuration: a preset or a YAML file (default: the --job "
                                    "file's model, else tiny)")
    add_job_options(p, "train" if what == "run" else "tune", "optim.steps=50 (a model field) or workers=4")
    p.add_argument("--workers", type=int, default=2, help="training workers" + trial)
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="logical CPUs each worker reserves")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints")
    p.add_argument("--log-every", type=int, default=10, help="steps between reported metrics")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="on GPUs: bf16 autocast (the clustering stays fp32/fp64) or fp32 as the authors")
    p.add_argument("--seed", type=int, help="augmentation seed (default: fresh views every epoch)")
    p.add_argument("--use-gpu", action="store_true", default=None,
                   help="train on GPUs (default: when the cluster has them)")
    p.add_argument("--experiment", default="pixelclip", help="the MLflow experiment")
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


def training_flags(args, job_file: bool, skip: tuple[str, ...] = ()) -> dict:
    """The training job's fields from the given flags: data, workers, ..., `model` from --preset
    (tiny when neither --preset nor a job file says), `validation` from --validate, `masks`.
    `skip`: options that mean something else in the command (tune's --max-failures is Tune's own)."""
    out = flags(args, {k: v for k, v in TRAIN_FIELDS.items() if k not in skip})
    if args.preset or not job_file:
        out["model"] = {"preset": args.preset or "tiny"}
    if args.validate:
        from pipelines.stages.evaluate.job import parse_benchmarks

        ((name, root),) = parse_benchmarks([args.validate]).items()
        out["validation"] = {"benchmark": name, "root": root, **flags(args, VALIDATION_FIELDS)}
    elif given(args) & set(VALIDATION_FIELDS):
        out["validation"] = flags(args, VALIDATION_FIELDS)  # a job file's validation, changed
    masks = flags(args, MASK_FIELDS)
    if masks:
        out["masks"] = masks
    return out
