"""The `pixelclip` command.

    pixelclip demo [--output out/demo] [--model auto|synth|tiny]    # the product on the local stack (make demo)
    pixelclip demo-library [--steps 20]                             # the library alone, no services
    pixelclip stack up|down|status [--stack-dir .stack]             # object store + MLflow + Ray head, 127.0.0.1
    pixelclip store|tracking start|stop|status --dir .stack/seaweedfs   # one local service
    pixelclip synth-sa1b -o s3://data/raw --shards 2 --images 8     # synthetic SA-1B shards
    pixelclip prepare --input s3://data/raw/ --output s3://data/ready/ [--source sa1b|dino|sam|images]
    pixelclip train --data s3://data/ready/ --storage s3://runs/ --name my-run --preset vit_b16 --workers 4
    pixelclip tune --data s3://data/ready/ --storage s3://sweeps/ --name k-sweep \\
        --search prompts.num_clusters=16,32,64 --search prompts.length=4,8 --metric-mode min
    pixelclip evaluate --model models:/pixelclip@champion --benchmark voc-20=/data/datasets -o out/eval
    pixelclip segment photo.jpg --classes "cat, grass, sky" --model models:/pixelclip@champion -o out.png
    pixelclip prompts draw|map --model models:/pixelclip@champion ...
    pixelclip registry list | alias NAME ALIAS VERSION | unalias NAME ALIAS
    pixelclip config tiny [--set prompts.num_clusters=32]           # print a resolved configuration
    pixelclip synth-scenes -o out/synth | synth-bench [--fast]      # SynthScenes and its benchmark

The same flag means the same thing everywhere: `-o/--output` is what a command writes, `--model` a
model source, `--readout` the dense readout, `--metric/--metric-mode` what a sweep selects by,
`--data` training shards, `--stack-dir` the local stack's folder, `--dir` one service's folder.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from pipelines.cli.common import HelpFormatter

# Every subcommand is a module of this package with `HELP`, `add_arguments(parser)` and `run(args)`
# (an exit code or None), registered here: name -> module (the order of `pixelclip --help`).
COMMANDS = {
    "demo": "demo", "demo-library": "demo_library", "stack": "stack", "store": "store", "tracking": "tracking",
    "synth-sa1b": "synth_sa1b", "prepare": "prepare", "train": "train", "tune": "tune", "evaluate": "evaluate",
    "segment": "segment", "prompts": "prompts", "registry": "registry", "config": "config",
    "synth-scenes": "synth_scenes", "synth-bench": "synth_bench",
}


def command(name: str):
    return importlib.import_module(f"pipelines.cli.{COMMANDS[name]}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pixelclip", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--debug", action="store_true",
                   help="full tracebacks (also PIXELCLIP_DEBUG=1); by default a failure prints its root cause "
                   "in one line")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        mod = command(name)
        mod.add_arguments(sub.add_parser(name, help=mod.HELP, description=mod.__doc__,
                                         formatter_class=HelpFormatter))
    return p


def run_command(argv: list[str]) -> int:
    """Parse `argv` (`["stack", "up", ...]`) and run the command; its exit code (0 for None). Errors
    propagate: `main` turns them into one line."""
    args = parse(list(argv))
    return command(args.command).run(args) or 0


def parse(argv: list[str]) -> argparse.Namespace:
    """The parsed arguments, with `args.given`: the options `argv` names (a job file's values stand
    unless a flag is given)."""
    from pipelines.cli.jobs import record_given

    p = parser()
    args = p.parse_args(argv)
    record_given(p, argv, args)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else list(argv))
    debug = args.debug or os.environ.get("PIXELCLIP_DEBUG") == "1"
    try:
        code = command(args.command).run(args)
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
    if code:
        sys.exit(code)
