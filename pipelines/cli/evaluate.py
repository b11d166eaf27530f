"""Zero-shot mIoU on labelled benchmarks with Ray Data batch inference (or, with `--task masks`,
classification of given masks); results to a folder or s3:// prefix and to the model's MLflow run."""

from __future__ import annotations

from pipelines.cli.common import add_address, add_readout, add_templates
from pipelines.cli.jobs import add_job_options, flags, load_job

HELP = "zero-shot mIoU on the benchmarks (Ray Data batch inference)"


def add_arguments(p) -> None:
    from pixelclip.eval.datasets import BENCHMARKS

    p.add_argument("--model", help="the model to evaluate: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, "
                                   "a .safetensors checkpoint (local or s3://) or openclip:NAME[:TAG]; required here "
                                   "or in --job")
    p.add_argument("--benchmark", action="append", default=[], metavar="NAME=ROOT",
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
    add_job_options(p, "evaluate", "limit=8")
    p.add_argument("--run-id", help="MLflow run to log the results to (default: the registry model's run)")
    add_address(p)


def job_from(args):
    from pipelines.images import read_class_names
    from pipelines.stages.evaluate.job import parse_benchmarks

    fields = flags(args, {"model": "model", "output": "output", "masks": "masks", "readout": "modes", "task": "task",
                          "protocol": "protocol", "templates": "templates", "image_size": "image_size",
                          "split": "split", "limit": "limit", "batch_size": "batch_size",
                          "concurrency": "concurrency", "run_id": "run_id"})
    if args.benchmark:
        fields["benchmarks"] = parse_benchmarks(args.benchmark)
    if args.class_names:
        fields["class_names"] = {name: read_class_names(uri)
                                 for name, uri in parse_benchmarks(args.class_names).items()}
    return load_job("evaluate", args, fields)


def run(args) -> None:
    from pipelines import storage
    from pipelines.ray_errors import connect
    from pipelines.stages.evaluate.job import run_evaluate
    from pipelines.stages.evaluate.report import format_markdown

    job = job_from(args)
    connect(args.address)
    results = run_evaluate(job)
    print(format_markdown(results).split("\n## ")[0])
    if job.output:
        print(f"results in {storage.join(job.output, 'results.json')} and results.md")
