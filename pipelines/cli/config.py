"""Print a resolved model configuration (a preset or a YAML file, with dotted overrides) as YAML; or,
with `--job KIND`, every field of a stage's job with its default and what it means (`--job train
FILE.yaml --set workers=4` prints that job resolved and checked)."""

from __future__ import annotations

from pipelines.cli.jobs import KINDS

HELP = "print a resolved model configuration, or a stage's job fields (--job), as YAML"


def add_arguments(p) -> None:
    p.add_argument("source", nargs="?",
                   help="a preset name (tiny, vit_b16, convnext_b, synth) or a YAML file; with --job, a job file")
    p.add_argument("--job", choices=list(KINDS), help="a stage's job: its fields, defaults and meaning")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="a dotted override, e.g. prompts.num_clusters=32; repeatable")


def run(args) -> int:
    import dataclasses

    import yaml

    from pipelines.cli.jobs import job_class
    from pixelclip.config import load_config
    from pixelclip.typed import describe, load, read_yaml

    if args.job is None:
        if not args.source:
            print("pixelclip config: give a preset or YAML file, or --job KIND (one of "
                  f"{', '.join(KINDS)})")
            return 2
        print(load_config(args.source, args.overrides).to_yaml(), end="")
        return 0
    cls = job_class(args.job)
    if args.source is None and not args.overrides:
        print(f"# the {args.job} job: every field, its default and what it means (`pixelclip {args.job} --job "
              "FILE.yaml` reads a file of these)")
        print(f"{args.job}:")
        print("\n".join(describe(cls, 2)))
        return 0
    layers = [read_yaml(args.source, "job file")] if args.source else []
    job = load(cls, layers, args.overrides, prefix=args.job)
    print(yaml.safe_dump(dataclasses.asdict(job), sort_keys=False), end="")
    return 0
