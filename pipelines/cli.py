"""The `pixelclip` command.

    pixelclip demo [--steps 20] [--out out/demo-library]     # the library demo; `make demo` is the whole product
    pixelclip segment photo.jpg --classes "cat, grass, sky" --model models:/pixelclip@champion -o out.png \
        [--labels labels.png] [--mode maskclip|plain|sclip|clearclip] [--protocol whole|slide] [--device cpu]
    pixelclip prompts draw --model ckpt.safetensors photo1.jpg photo2.jpg -o out/prompts/
    pixelclip prompts map --model models:/pixelclip@champion --classes "cat, dog, sky" [--method tsne] -o map.png
    pixelclip config tiny [--set prompts.num_clusters=32]       # print a resolved configuration
    pixelclip stack up|down|status [--dir .stack]                 # object store + MLflow + Ray head, 127.0.0.1
    pixelclip store start|stop|status --data .stack/seaweedfs     # the local S3 object store (SeaweedFS)
    pixelclip synth-sa1b s3://data/raw --shards 2 --images 8      # synthetic SA-1B shards
    pixelclip prepare --input s3://data/raw/ --output s3://data/ready/ [--source sa1b|dino|sam] [--sample 0.05]
    pixelclip train --data s3://data/ready/ --storage s3://runs/ --name my-run --preset vit_b16 --workers 4
    pixelclip tune --data s3://data/ready/ --storage s3://data/sweeps --name k-sweep \
        --search prompts.num_clusters=16,32,64 --search prompts.length=4,8 --register-as pixelclip
    pixelclip evaluate --model models:/pixelclip@champion --benchmark voc-20=/data/datasets --output out/eval \
        [--mode maskclip --mode sclip] [--task masks] [--protocol slide]
    pixelclip synth-scenes out/synth --train-shards 4 --images-per-shard 64 --eval 64 --masks oversegmented
    pixelclip synth-bench [--fast] --out bench/synthscenes   # PixelCLIP vs its ablations on SynthScenes: REPORT.md
    pixelclip tracking start|stop|status --data .stack/mlflow [--artifacts s3://mlflow/artifacts]
    pixelclip registry list | alias NAME ALIAS VERSION
    pixelclip registry segment models:/pixelclip@champion photo.jpg --classes "cat, sky" -o seg.png
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _segment(args) -> None:
    from pipelines.segment import class_fractions, parse_classes, save_labels, segment_image

    labels, picture = segment_image(args.model, args.image, args.classes, device=args.device,
                                    protocol=args.protocol, mode=args.mode, templates=args.templates,
                                    image_size=args.image_size, max_side=args.max_side)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    picture.save(args.output)
    if args.labels:
        save_labels(labels, args.labels)
    names = parse_classes(args.classes)
    print(", ".join(f"{n} {f:.1%}" for n, f in zip(names, class_fractions(labels, len(names)), strict=True)))
    print(f"wrote {args.output}" + (f" and {args.labels}" if args.labels else ""))


def _add_model_args(p) -> None:
    """The model-loading arguments `segment` shares with the commands that segment."""
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    p.add_argument("--protocol", choices=["whole", "slide"], default="whole",
                   help="whole image at the encoder's input (default) or sliding windows")
    p.add_argument("--max-side", type=int, default=None,
                   help="shrink larger photos to this long side before encoding (default 2048)")


def _add_segment(sub) -> None:
    s = sub.add_parser("segment", help="segment a photo with typed class names, write an overlay with a legend")
    s.add_argument("image", help="a photo: local path or s3:// URI")
    s.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat, grass, sky"')
    s.add_argument("--model", "--checkpoint", dest="model", required=True,
                   help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, a .safetensors checkpoint "
                        "(local or s3://), or openclip:NAME[:TAG] (--checkpoint: the old name of --model)")
    s.add_argument("-o", "--output", type=Path, default=Path("segmentation.png"), help="overlay PNG")
    s.add_argument("--labels", type=Path,
                   help="also write the label map as a PNG of class indices (8-bit; 16-bit from 256 classes)")
    s.add_argument("--mode", default=None,
                   help="dense readout: maskclip (the default), plain, sclip, clearclip")
    s.add_argument("--templates", choices=["ensemble", "single"], default="ensemble",
                   help="prompt templates: the paper's 8-template ensemble (default) or one")
    s.add_argument("--image-size", type=int, default=None, help="the encoder's square input (default: the model's)")
    _add_model_args(s)


def _prompts(args) -> None:
    from pipelines.prompts import draw_prompts, load_task, prompt_map, write_map

    task = load_task(args.model, device=args.device)
    if args.prompts_command == "draw":
        for path in draw_prompts(task, args.images, args.output, protocol=args.protocol,
                                 **({"max_side": args.max_side} if args.max_side else {})):
            print(f"wrote {path}")
    else:
        result = prompt_map(task, args.classes, method=args.method, templates=args.templates, seed=args.seed)
        png, js = write_map(result, args.output, title=f"{args.model} ({args.method})")
        print(f"wrote {png} and {js}")


def _add_prompts(sub) -> None:
    p = sub.add_parser("prompts", help="what the learned class prompts segment (draw) and where they lie (map)")
    ps = p.add_subparsers(dest="prompts_command", required=True)
    model_help = "a PixelCLIP model: a .safetensors checkpoint (local or s3://) or models:/NAME@ALIAS"
    d = ps.add_parser("draw", help="overlay of the nearest learned prompt per pixel, one PNG per image")
    d.add_argument("images", nargs="+", help="photos: local paths or s3:// URIs")
    d.add_argument("--model", required=True, help=model_help)
    d.add_argument("-o", "--output", type=Path, default=Path("prompts"), help="output folder")
    _add_model_args(d)
    m = ps.add_parser("map", help="2-D map (PCA or t-SNE) of the prompt features among class text features")
    m.add_argument("--model", required=True, help=model_help)
    m.add_argument("--classes", required=True, help='comma-separated class names, e.g. "cat, dog, sky"')
    m.add_argument("--method", choices=["pca", "tsne"], default="pca", help="pca (default) or tsne (scikit-learn)")
    m.add_argument("--templates", choices=["ensemble", "single"], default="ensemble")
    m.add_argument("--seed", type=int, default=0, help="t-SNE's random state")
    m.add_argument("-o", "--output", type=Path, default=Path("prompt_map.png"),
                   help="scatter plot PNG; the coordinates go beside it as .json")
    m.add_argument("--device", default="cpu")


def _prepare(args) -> None:
    import json

    from pipelines.prepare import PrepareConfig, format_summary, run_prepare
    from pipelines.ray_errors import connect
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


def _add_prepare(sub) -> None:
    p = sub.add_parser("prepare", help="SA-1B shards or JPEGs -> training-ready Parquet shards (Ray Data)")
    p.add_argument("--input", required=True, help="s3:// prefix or folder of sa_*.tar (or JPEGs for dino/sam)")
    p.add_argument("--output", required=True, help="s3:// prefix or folder for the Parquet shards")
    p.add_argument("--source", choices=["sa1b", "dino", "sam", "images"], default="sa1b",
                   help="sa1b: the shards' own masks; dino / sam: masks computed per image (GPU actors); images: "
                        "no masks, for train --masks dino (masks per crop)")
    p.add_argument("--sample", type=float, default=1.0, help="fraction of images kept (paper: 0.05)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--short-side", type=int, default=750, help="stored short side (px)")
    p.add_argument("--min-area", type=int, default=1,
                   help="smallest mask kept, in stored pixels (default 1: every mask, as the authors)")
    p.add_argument("--max-masks", type=int, default=0,
                   help="keep only the largest N masks per image (default 0: all)")
    p.add_argument("--weights", help="DINO / SAM weights: local or s3:// path")
    p.add_argument("--sam-model-type", default="vit_b")
    p.add_argument("--allow-random-weights", action="store_true", help="tests only: untrained mask models")
    p.add_argument("--overwrite", action="store_true", help="replace Parquet files already in --output")
    p.add_argument("--address", default=None, help="Ray address (default: the running cluster, else local)")
    p.add_argument("--summary", help="also write the run summary as JSON to this local file")


def _train(args) -> None:
    from pipelines.ray_errors import connect
    from pipelines.train import TrainJobConfig, run_train, summary_json
    from pixelclip.config import load_config

    cfg = load_config(args.preset, args.overrides)
    job = TrainJobConfig(data=args.data, storage=args.storage, name=args.name, model=cfg.to_dict(),
                         workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                         checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                         max_failures=args.max_failures, placement=args.placement, register_as=args.register_as,
                         validation=_validation(args), masks=_masks(args), precision=args.precision).validate()
    connect(args.address)
    print(summary_json(run_train(job)))


def _validation(args) -> dict | None:
    """`--validate NAME=ROOT` (+ every / limit / class names) -> TrainJobConfig.validation."""
    if not args.validate:
        return None
    from pipelines.evaluate import parse_benchmarks

    ((name, root),) = parse_benchmarks([args.validate]).items()
    return {"benchmark": name, "root": root, "every": args.validate_every, "limit": args.validate_limit,
            "class_names": args.validate_class_names, "split": args.validate_split}


def _masks(args) -> dict | None:
    """`--masks dino` (+ weights, actors, GPU share) -> TrainJobConfig.masks; None for the records' masks."""
    if args.masks == "stored":
        return None
    return {"source": args.masks, "weights": args.dino_weights, "arch": args.dino_arch, "k": args.dino_k,
            "actors": args.dino_actors, "gpus_per_actor": args.dino_gpu,
            "allow_random_weights": args.allow_random_weights}


def _add_training_args(p, what: str) -> None:
    """The arguments `train` and `tune` share; `what` is "run" or "sweep"."""
    p.add_argument("--data", required=True, help="training-ready shards (s3:// or folder)")
    p.add_argument("--storage", required=True, help=f"where {what}s and checkpoints live (s3:// or folder)")
    p.add_argument("--name", required=True, help=f"{what} name; the same name resumes the {what}")
    p.add_argument("--preset", default="tiny", help="preset or YAML config")
    p.add_argument("--set", dest="overrides", action="append", default=[], help="dotted config override")
    p.add_argument("--workers", type=int, default=2, help="training workers" + (" per trial" * (what == "sweep")))
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16",
                   help="on GPUs: bf16 autocast (default; the clustering stays fp32/fp64) or fp32 as the authors")
    v = p.add_argument_group("validation while training (zero-shot mIoU, metric val_miou)")
    v.add_argument("--validate", metavar="NAME=ROOT", help="a labelled benchmark split, e.g. ade20k-150=s3://data/ade")
    v.add_argument("--validate-every", type=int, default=100, help="steps between validations")
    v.add_argument("--validate-limit", type=int, default=64, help="the first N images of the split")
    v.add_argument("--validate-class-names", help="a file (one class per line) with the split's own classes")
    v.add_argument("--validate-split", default="val")
    m = p.add_argument_group("masks computed on each training crop (the paper's DINO recipe)")
    m.add_argument("--masks", choices=["stored", "dino"], default="stored",
                   help="stored: the records' own masks (default); dino: DINO k-means on every crop, on GPU actors")
    m.add_argument("--dino-weights", help="DINO ViT-S/16 weights, local or s3:// (dino_deitsmall16_pretrain.pth)")
    m.add_argument("--dino-arch", default="vit_small_patch16_224.dino",
                   help="timm architecture of the weights (tiny: a small random ViT, for tests)")
    m.add_argument("--dino-k", type=int, default=16, help="k-means clusters per crop (default 16)")
    m.add_argument("--dino-actors", type=int, help="DINO actors (default: one per training worker)")
    m.add_argument("--dino-gpu", type=float, default=0.25,
                   help="each DINO actor's share of a GPU; each worker takes the rest of its GPU (default 0.25)")
    m.add_argument("--allow-random-weights", action="store_true", help="tests only: masks from an untrained DINO")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="fine-tune with Ray Train (DDP) on training-ready shards")
    _add_training_args(p, "run")
    p.add_argument("--max-failures", type=int, default=2, help="worker-group restarts before the run fails")
    p.add_argument("--placement", default="PACK", choices=["PACK", "SPREAD", "STRICT_SPREAD"],
                   help="where the workers go: STRICT_SPREAD puts one per node, so a lost node costs one worker")
    p.add_argument("--register-as", help="register the final model under this MLflow registry name")
    p.add_argument("--address", default=None, help="Ray address (default: the running cluster, else local)")


def _tune(args) -> None:
    from pipelines.ray_errors import connect
    from pipelines.tune import TuneJobConfig, format_summary, parse_search, parse_variant, run_tune
    from pixelclip.config import load_config

    cfg = load_config(args.preset, args.overrides)
    job = TuneJobConfig(data=args.data, storage=args.storage, name=args.name, model=cfg.to_dict(),
                        search=parse_search(args.search), variants=dict(map(parse_variant, args.variant)),
                        num_samples=args.num_samples, metric=args.metric,
                        mode=args.mode, scheduler=args.scheduler, grace_period=args.grace_period,
                        reduction_factor=args.reduction_factor, max_concurrent=args.max_concurrent,
                        workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                        checkpoint_every=args.checkpoint_every, log_every=args.log_every,
                        register_as=args.register_as, alias=args.alias, validation=_validation(args),
                        masks=_masks(args), precision=args.precision)
    from pipelines.storage import StorageOptions
    from pipelines.train import worker_env

    # the trials get the endpoint and the tracking URI in their runtime env, and read the storage keys
    # from their node's environment (never from a runtime env, which Ray logs). A driver that
    # `ray job submit` started already runs in the job's runtime env, which its trials share (and Ray
    # refuses a second one that names the same variables).
    env = worker_env(StorageOptions.from_env(), job.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    in_job = "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ
    connect(args.address, runtime_env=None if in_job else {"env_vars": env})
    print(format_summary(run_tune(job), job.metric))


def _add_tune(sub) -> None:
    p = sub.add_parser("tune", help="sweep K, l (any config field) with Ray Tune + ASHA over the train stage")
    _add_training_args(p, "sweep")
    p.add_argument("--search", action="append", default=[],
                   help="field=a,b,c (grid) or field=uniform(a,b) | loguniform(a,b) | randint(a,b); repeatable")
    p.add_argument("--variant", action="append", default=[], metavar="NAME: field=value; field=value",
                   help="a named configuration; the variants form a grid crossed with --search; repeatable")
    p.add_argument("--num-samples", type=int, default=1, help="draws of the distributions / grid repeats")
    p.add_argument("--metric", default="loss_rel", help="reported metric to select by (default: loss_rel)")
    p.add_argument("--mode", choices=["min", "max"], default="min")
    p.add_argument("--scheduler", choices=["asha", "fifo"], default="asha")
    p.add_argument("--grace-period", type=int, help="steps before ASHA may stop a trial (default: steps / 4)")
    p.add_argument("--reduction-factor", type=float, default=2.0)
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the cluster fits)")
    p.add_argument("--register-as", help="register the best trial's model under this MLflow registry name")
    p.add_argument("--alias", default="candidate", help="alias pointed at the registered best model")
    p.add_argument("--address", default=None, help="Ray address (default: the running cluster, else local)")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="pixelclip", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="fine-tune the tiny preset on CPU and segment an image")
    d.add_argument("--steps", type=int, default=20)
    d.add_argument("--out", type=Path, default=Path("out/demo-library"))
    d.add_argument("--preset", default="tiny")
    d.add_argument("--set", dest="overrides", action="append", default=[])
    _add_segment(sub)
    _add_prompts(sub)
    c = sub.add_parser("config", help="print a resolved configuration as YAML")
    c.add_argument("source", help="a preset name or a YAML file")
    c.add_argument("--set", dest="overrides", action="append", default=[])
    _add_prepare(sub)
    _add_train(sub)
    _add_tune(sub)
    p_eval = sub.add_parser("evaluate", help="zero-shot mIoU on the benchmarks (Ray Data batch inference)")
    from pipelines.evaluate import add_arguments as add_evaluate_arguments

    add_evaluate_arguments(p_eval)
    st = sub.add_parser("store", help="start, stop or report the local SeaweedFS object store")
    st.add_argument("action", choices=["start", "stop", "status"])
    st.add_argument("--data", default=".stack/seaweedfs")
    st.add_argument("--port", type=int, default=None)
    st.add_argument("--bucket", action="append", default=[], help="with start: also create this bucket")
    for name, (_, text) in _PASSTHROUGH.items():
        sub.add_parser(name, help=text, add_help=False).add_argument("rest", nargs=argparse.REMAINDER)
    p.add_argument("--debug", action="store_true",
                   help="full tracebacks (also PIXELCLIP_DEBUG=1); by default a failure prints its root cause "
                   "in one line")
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv[:1] or os.environ.get("PIXELCLIP_DEBUG") == "1"
    if argv[:1] == ["--debug"]:
        argv = argv[1:]
    if argv and argv[0] in _PASSTHROUGH:  # their own parsers, --help included
        args = argparse.Namespace(command=argv[0], rest=argv[1:])
    else:
        args = p.parse_args(argv)
    try:
        _dispatch(args)
    except Exception as e:
        from pipelines.ray_errors import RayConnectError, describe, inside_ray, is_user_error

        if debug:
            raise
        if isinstance(e, RayConnectError):  # says what to source: no trace
            print(f"pixelclip {args.command}: error: {e}", file=sys.stderr)
            sys.exit(2)
        if inside_ray(e):  # Ray's wrappers hold the worker's traceback: show what the worker raised
            print(f"pixelclip {args.command}: error inside Ray: {describe(e)} "
                  "(pixelclip --debug ... for the full trace)", file=sys.stderr)
            sys.exit(1)
        if not is_user_error(e):
            raise
        print(f"pixelclip {args.command}: error: {e}", file=sys.stderr)
        sys.exit(2)


# subcommands with their own argument parsers: module (with main(argv)), help
_PASSTHROUGH = {
    "stack": ("pipelines.stack", "the local stack: object store, MLflow and a Ray head on 127.0.0.1 (up|down|status)"),
    "tracking": ("pipelines.tracking", "start, stop or report the local MLflow server"),
    "registry": ("pipelines.registry_cli", "list models, move aliases, segment with models:/name@alias"),
    "synth-sa1b": ("pipelines.synth_sa1b", "write synthetic SA-1B shards"),
    "synth-scenes": ("pipelines.synth_scenes", "write SynthScenes: SA-1B tars with captions, a labelled split"),
    "synth-bench": ("pipelines.synth_bench", "the SynthScenes benchmark: PixelCLIP vs its ablations, report"),
}


def _dispatch(args) -> None:
    handlers = {"prepare": _prepare, "train": _train, "tune": _tune, "segment": _segment, "prompts": _prompts,
                "store": _store, "demo": _demo, "config": _config}
    if args.command in _PASSTHROUGH:
        import importlib

        sys.exit(importlib.import_module(_PASSTHROUGH[args.command][0]).main(args.rest) or 0)
    if args.command == "evaluate":
        from pipelines.evaluate import run_from_args

        return run_from_args(args)
    handlers[args.command](args)


def _store(args) -> None:
    from pipelines import objectstore

    port = ["--port", str(args.port)] if args.port else []
    rc = objectstore.main([args.action, "--data", args.data, *port]) or 0
    if rc == 0 and args.action == "start":
        for bucket in args.bucket:
            objectstore.SeaweedFS(args.data).create_bucket(bucket)
            print(f"bucket {bucket} ready")
    sys.exit(rc)


def _demo(args) -> None:
    from pipelines.demo import run

    run(args.steps, args.out, args.preset, args.overrides)


def _config(args) -> None:
    from pixelclip.config import load_config

    print(load_config(args.source, args.overrides).to_yaml(), end="")


if __name__ == "__main__":
    main()
