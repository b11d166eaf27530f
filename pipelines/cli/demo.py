"""The main job on the embedded default: the whole product on one machine (local stack, SynthScenes,
prepare -> train -> register -> evaluate -> segment), with a table of what it measured."""

from __future__ import annotations

from pathlib import Path

from pipelines.cli.common import add_stack_dir

HELP = "the product on the local stack: prepare, train, register, evaluate, segment"


def add_arguments(p) -> None:
    from pipelines.demo import DEMO_STEPS

    p.add_argument("-o", "--output", type=Path, default=Path("out/demo"),
                   help="the demo's folder (summary.json, before_after.png, overlay.png)")
    p.add_argument("--model", choices=["auto", "synth", "tiny"], default="auto",
                   help="synth: the shipped SynthScenes CLIP; tiny: random weights, the mechanics only; "
                        "auto: synth when its checkpoint is present")
    p.add_argument("--steps", type=int, default=None,
                   help=f"training steps (default: {DEMO_STEPS}, 3x the SynthScenes benchmark's; 60 with --model tiny)")
    add_stack_dir(p)


def run(args) -> None:
    from pipelines.demo import run as run_demo

    run_demo(args.output, args.model, args.steps, args.stack_dir)
