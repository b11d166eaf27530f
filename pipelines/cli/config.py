"""Print a resolved model configuration (a preset or a YAML file, with dotted overrides) as YAML."""

from __future__ import annotations

HELP = "print a resolved model configuration as YAML"


def add_arguments(p) -> None:
    p.add_argument("source", help="a preset name (tiny, vit_b16, convnext_b, synth) or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="a dotted override, e.g. prompts.num_clusters=32; repeatable")


def run(args) -> None:
    from pixelclip.config import load_config

    print(load_config(args.source, args.overrides).to_yaml(), end="")
