"""Zero-shot mIoU on labelled benchmarks with Ray Data batch inference (or, with `--task masks`,
classification of given masks); results to a folder or s3:// prefix and to the model's MLflow run."""

from __future__ import annotations

from pipelines.cli.common import add_address, add_model, add_readout, add_templates

HELP = "zero-shot mIoU on the benchmarks (Ray Data batch inference)"


def add_arguments(p) -> None:
    from pixelclip.eval.datasets import BENCHMARKS

    add_model(p, "the model to evaluate")
    p.add_argument("--benchmark", action="append", required=True, metavar="NAME=ROOT",
                   help=f"benchmark and its dataset root (folder or s3://); repeatable; names: {', '.join(BENCHMARKS)}")
    p.add_argument("-o", "--output", help="folder or s3:// prefix for results.json and results.md")
    add_readout(p, repeat=True)
    p.add_argument("--task", choices=["semseg", "masks"], default="semseg",
                   help="semseg: dense segmentation; masks: classify the ground-truth class regions")
    p.add_argument("--masks", help="with --task masks: folder or s3:// prefix of <id>.png instance-id maps "
                                   "(0 = none) from a mask generator; default: the ground-truth class regions")
    p.add_argument("--protocol", choices=["whole", "slide"], default="whole",
                   help="the whole image at the encoder's input, or sliding windows")
    add_templates(p)
    p.add_argument("--image-size", type=int, help="square input size (default: the model's)")
    p.add_argument("--split", default="val", help="the benchmarks' split")
    p.add_argument("--limit", type=int, help="only the first N images of each benchmark")
    p.add_argument("--batch-size", type=int, default=4, help="images per inference batch")
    p.add_argument("--concurrency", type=int, help="inference actors (default: one per GPU, else one)")
    p.add_argument("--class-names", action="append", default=[], metavar="NAME=FILE",
                   help="your own dataset in a benchmark's layout: its class names, one per line (local or s3://)")
    p.add_argument("--run-id", help="MLflow run to log the results to (default: the registry model's run)")
    add_address(p)


def run(args) -> None:
    from pipelines import storage
    from pipelines.images import read_class_names
    from pipelines.ray_errors import connect
    from pipelines.stages.evaluate.job import EvalJobConfig, parse_benchmarks, run_evaluate
    from pipelines.stages.evaluate.report import format_markdown

    classes = {name: read_class_names(uri) for name, uri in parse_benchmarks(args.class_names).items()}
    job = EvalJobConfig(model=args.model, benchmarks=parse_benchmarks(args.benchmark), output=args.output,
                        class_names=classes, masks=args.masks,
                        modes=args.readout or ["maskclip"], task=args.task, protocol=args.protocol,
                        templates=args.templates, image_size=args.image_size, split=args.split, limit=args.limit,
                        batch_size=args.batch_size, concurrency=args.concurrency, run_id=args.run_id).validate()
    connect(args.address)
    results = run_evaluate(job)
    print(format_markdown(results).split("\n## ")[0])
    if job.output:
        print(f"results in {storage.join(job.output, 'results.json')} and results.md")
