"""The SynthScenes benchmark: PixelCLIP against its ablations through the real stages on the local
stack; writes REPORT.md, curves.png and results.json (about 2 hours on 2 CPU cores; `--fast` is the
minutes-long check of the pipeline, not of the numbers)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.cli.common import add_stack_dir

HELP = "the SynthScenes benchmark: PixelCLIP vs its ablations, report"


def _seed_pair(text: str) -> tuple[int, int]:
    """`--eval-seeds 1,3` -> (1, 3)."""
    parts = text.split(",")
    if len(parts) != 2 or not all(x.strip().lstrip("-").isdigit() for x in parts):
        raise argparse.ArgumentTypeError(f"{text!r}: two comma-separated integers, e.g. 1,3")
    return int(parts[0]), int(parts[1])


def add_arguments(p) -> None:
    from pipelines.synth.testbed import TESTBED

    p.add_argument("-o", "--output", type=Path, default=Path("bench/synthscenes"),
                   help="the report's folder (REPORT.md, results.json, pilots.json, curves.png)")
    p.add_argument("--fast", action="store_true", help="one seed, a few steps: the pipeline, not the numbers")
    p.add_argument("--lr-pilot", action="store_true", help="only the learning-rate pilot on the development split")
    add_stack_dir(p)
    p.add_argument("--pilot", metavar="NAME", help="a pilot on the development split, appended to OUTPUT/pilots.json")
    p.add_argument("--pilot-variant", action="append", default=[], metavar="'NAME: field=value; ...'",
                   help="a variant of the pilot (repeat); overrides on top of the testbed's model")
    p.add_argument("--pilot-steps", type=int, default=None, help="steps of each pilot trial (default: the testbed's)")
    p.add_argument("--pilot-seeds", default="0", help="comma-separated seeds of the pilot")
    p.add_argument("--eval-seeds", metavar="A,B", default=None, type=_seed_pair,
                   help="the seeds of the two evaluation splits (default: the testbed's, "
                        f"{TESTBED['eval_seed']},{TESTBED['eval2_seed']})")
    p.add_argument("--report-only", action="store_true",
                   help="render REPORT.md and curves.png again from OUTPUT/results.json; runs nothing")
    p.add_argument("--with-segmentations", action="store_true",
                   help="with --report-only: also segmentations.png, from the checkpoints (source .stack/env.sh)")


def run(args) -> int | None:
    from pipelines.synth.bench import rerender
    from pipelines.synth.bench import run as run_bench
    from pipelines.synth.pilots import parse_pilot_variant
    from pipelines.synth.testbed import FAST, TESTBED

    cmd = "pixelclip " + " ".join(sys.argv[1:])
    if args.report_only:
        print(rerender(args.output, cmd.strip(), args.with_segmentations).read_text())
        return None
    spec = None
    if args.pilot:
        if not args.pilot_variant:
            print("pixelclip synth-bench: error: --pilot needs at least one --pilot-variant", file=sys.stderr)
            return 2
        spec = {"name": args.pilot, "variants": dict(map(parse_pilot_variant, args.pilot_variant)),
                "steps": args.pilot_steps or (FAST if args.fast else TESTBED)["steps"],
                "seeds": [int(s) for s in args.pilot_seeds.split(",")]}
    run_bench(args.output, fast=args.fast, stack_dir=args.stack_dir, lr_pilot=args.lr_pilot, command=cmd.strip(),
              pilot_spec=spec, eval_seeds=args.eval_seeds)
    return None
