"""`--help` of every subcommand states each option's real default exactly once (or that it is required)."""

from __future__ import annotations

import argparse
import re

import pytest

from repo_gen.cli import COMMANDS, make_parser


def _parsers() -> dict[str, argparse.ArgumentParser]:
    top = make_parser()
    subs = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return {"repo-gen": top, **{f"repo-gen {name}": p for name, p in subs.choices.items()}}


def _blocks(text: str) -> dict[str, str]:
    """Option help blocks of a rendered --help: '--flag' -> its whole text (all lines joined)."""
    blocks: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^  (-[\w-]+(?: (?:\{[^}]*\}|[A-Z_.\[\]]+))?(?:, --[\w-]+(?: (?:\{[^}]*\}|[A-Z_.\[\]]+))?)*)", line)
        if m:
            # "--output DIR, --work-dir DIR": the block is known by its last spelling
            current = m.group(1).split(", ")[-1].split(" ")[0]
            blocks[current] = line
        elif current and line.startswith("      "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return blocks


@pytest.mark.parametrize("name", ["repo-gen", *(f"repo-gen {c}" for c in COMMANDS)])
def test_every_option_states_its_real_default_once(name, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no wrapping to undo
    parsers = _parsers()
    if name not in parsers:
        pytest.skip(f"{name} is not part of this build")
    parser = parsers[name]
    blocks = _blocks(parser.format_help())
    problems = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        flag = action.option_strings[-1]
        block = blocks.get(flag)
        if block is None:
            problems.append(f"{flag}: not shown in --help")
            continue
        said = block.lower().count("default")
        if action.required:
            if said or "(required)" not in block:
                problems.append(f"{flag}: required, so its help says so and names no default: {block.strip()}")
        elif said != 1:
            problems.append(f"{flag}: states a default {said} times: {block.strip()}")
        for wrong in ("(default: True)", "(default: False)", "(default: None)"):
            if wrong in block:
                problems.append(f"{flag}: shows Python's {wrong} instead of what it means: {block.strip()}")
        if action.nargs == 0 and "(default: " in block and "(default: off)" not in block:
            problems.append(f"{flag}: a flag is off unless given: {block.strip()}")
        if action.nargs != 0 and isinstance(action.default, (int, float, str)) and "(default: " in block:
            shown = block.split("(default: ", 1)[1].rsplit(")", 1)[0]
            if shown != str(action.default):
                problems.append(f"{flag}: shows {shown!r}, the real default is {action.default!r}")
    assert not problems, "\n".join(problems)
