"""What the subcommands share: the help formatter and the arguments several commands take."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's default shown after its help, unless the help already
    says it or there is none to show (None, False, an empty list)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def add_output(p, default: str, what: str) -> None:
    """`-o/--output`: a local file or folder the command writes."""
    p.add_argument("-o", "--output", type=Path, default=Path(default), help=what)


def add_model(p, what: str = "the model") -> None:
    p.add_argument("--model", required=True,
                   help=f"{what}: models:/NAME@ALIAS, models:/NAME/VERSION, runs:/ID/model, a .safetensors "
                        "checkpoint (local or s3://) or openclip:NAME[:TAG]")


def add_inference(p) -> None:
    """The options of the commands that segment photos."""
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--protocol", choices=["whole", "slide"], default="whole",
                   help="the whole image at the encoder's input, or sliding windows")
    p.add_argument("--max-side", type=int, default=None,
                   help="shrink larger photos to this long side before encoding (default 2048)")


def add_readout(p, repeat: bool = False) -> None:
    extra = "; repeat to compare" if repeat else ""
    p.add_argument("--readout", action="append" if repeat else "store", default=None, dest="readout",
                   help=f"the dense readout: maskclip (default), plain, sclip, clearclip{extra}")


def add_templates(p) -> None:
    p.add_argument("--templates", choices=["ensemble", "single"], default="ensemble",
                   help="prompt templates: the paper's 8-template ensemble or one")


def add_address(p) -> None:
    p.add_argument("--address", default=None, help="Ray address (default: the running cluster, else local)")


def add_stack_dir(p) -> None:
    p.add_argument("--stack-dir", default=".stack", help="the local stack's folder (data, logs, env.sh)")


def report_status(what: str, st: dict, print_running: Callable[[dict], None]) -> int:
    """`status` of one local service: 1 after "WHAT: not running", else 0 after what `print_running(st)` says."""
    if not st["running"]:
        print(f"{what}: not running")
        return 1
    print_running(st)
    return 0
