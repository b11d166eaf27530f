"""A stage's job from the command line: defaults, then a YAML job file (`--job`), then the flags the
user gave, then dotted `--set` overrides (`pixelclip.typed.load`); every error names the field."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from pixelclip.typed import load, merge_dicts, read_yaml

# kind -> (module, class): the application's job-configuration tree (`pixelclip config --job KIND`)
KINDS = {
    "prepare": ("pipelines.stages.prepare", "PrepareConfig"),
    "train": ("pipelines.stages.train.job", "TrainJobConfig"),
    "tune": ("pipelines.stages.tune.job", "TuneJobConfig"),
    "evaluate": ("pipelines.stages.evaluate.job", "EvalJobConfig"),
    "validation": ("pipelines.stages.train.job", "ValidationConfig"),
}


def job_class(kind: str) -> type:
    module, name = KINDS[kind]
    return getattr(importlib.import_module(module), name)


def add_job_options(p, kind: str, set_help: str = "") -> None:
    p.add_argument("--job", metavar="FILE.yaml",
                   help=f"the {kind} job as YAML (`pixelclip config --job {kind}` lists every field); "
                        "the flags given and --set override it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE",
                   help=f"a dotted override of the job, e.g. {set_help or 'FIELD=VALUE'}; repeatable")


def given(args) -> set[str]:
    """The options the user wrote on the command line (not those at their default)."""
    return getattr(args, "given", set(vars(args)))


def nested(pairs: dict[str, Any]) -> dict:
    """`{"convert.short_side": 48, "seed": 1}` -> `{"convert": {"short_side": 48}, "seed": 1}`."""
    out: dict = {}
    for key, value in pairs.items():
        part: dict = {key.split(".")[-1]: value}
        for name in reversed(key.split(".")[:-1]):
            part = {name: part}
        out = merge_dicts(out, part)
    return out


def flags(args, fields: dict[str, str]) -> dict:
    """The given options among `fields` (option dest -> dotted job field), as a nested mapping."""
    have = given(args)
    return nested({path: getattr(args, dest) for dest, path in fields.items() if dest in have})


def load_job(kind: str, args, from_flags: dict, base: dict | None = None) -> Any:
    """The validated job: `base` (the command's own defaults), `--job` file, `from_flags`, `--set`."""
    layers = [base or {}, read_yaml(args.job, "--job file") if args.job else {}, from_flags]
    return load(job_class(kind), layers, args.overrides, prefix=kind)


def record_given(p: argparse.ArgumentParser, argv: list[str], args) -> None:
    """`args.given`: the dests `argv` sets itself, found by parsing it again with every default hidden."""
    saved = []

    def hide(parser):
        for action in parser._actions:
            saved.append((action, action.default))
            action.default = argparse.SUPPRESS
            for sub in (getattr(action, "choices", None) or {}).values() if isinstance(
                    action, argparse._SubParsersAction) else ():
                hide(sub)

    hide(p)
    try:
        explicit = p.parse_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    args.given = set(vars(explicit))
