"""One CLI grammar: every subcommand registered the same way, every option with help, the same flag
meaning the same thing in every command."""

from __future__ import annotations

import argparse

import pytest

from pipelines.cli import COMMANDS, parser


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """'pixelclip X [Y]' -> its parser, for every subcommand and sub-subcommand."""
    out, todo = {}, [("pixelclip", parser())]
    while todo:
        name, p = todo.pop()
        out[name] = p
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                todo += [(f"{name} {n}", sp) for n, sp in a.choices.items()]
    return out


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)]


def test_every_command_is_registered_and_every_option_has_help():
    parsers = _parsers()
    assert {f"pixelclip {c}" for c in COMMANDS} <= set(parsers)
    assert {"pixelclip prompts draw", "pixelclip registry list"} <= set(parsers)
    bare = [f"{name} {'/'.join(a.option_strings) or a.dest}" for name, p in parsers.items() for a in _options(p)
            if not (a.help or "").strip()]
    assert not bare, bare


def test_the_same_flag_means_the_same_thing():
    flags = {name: {f for a in _options(p) for f in a.option_strings} for name, p in _parsers().items()}
    retired = {"--out", "--mode", "--checkpoint", "--data-dir"}
    assert not {n: fl & retired for n, fl in flags.items() if fl & retired}
    assert {n for n, fl in flags.items() if "--data" in fl} == {"pixelclip train", "pixelclip tune"}
    writers = {n for n, fl in flags.items() if "--output" in fl}
    assert all("-o" in flags[n] for n in writers) and len(writers) >= 10, writers
    assert {n for n, fl in flags.items() if "--readout" in fl} == {"pixelclip segment", "pixelclip evaluate"}
    assert {n for n, fl in flags.items() if "--metric-mode" in fl} == {"pixelclip tune"}
    assert {n for n, fl in flags.items() if "--stack-dir" in fl} == {"pixelclip stack", "pixelclip demo",
                                                                     "pixelclip synth-bench"}


def test_defaults_are_shown():
    text = parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "(default: 2)" in text and "(default: bf16)" in text  # --workers, --precision
    assert "(default: None)" not in text and "(default: False)" not in text


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_of_every_command(name, capsys):
    with pytest.raises(SystemExit) as e:
        parser().parse_args([name, "--help"])
    assert e.value.code == 0 and f"usage: pixelclip {name}" in capsys.readouterr().out


@pytest.mark.parametrize("command,what", [("store", "SeaweedFS"), ("tracking", "MLflow server")])
def test_status_of_a_stopped_service_says_so_and_exits_1(command, what, tmp_path, capsys):
    from pipelines.cli import run_command

    assert run_command([command, "status", "--dir", str(tmp_path / "svc")]) == 1
    assert capsys.readouterr().out.strip() == f"{what} in {tmp_path / 'svc'}: not running"
