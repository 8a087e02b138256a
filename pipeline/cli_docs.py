"""docs/cli.md, made from the parser and the Makefile so it cannot drift: `python -m pipeline.cli_docs > docs/cli.md`.

`python -m pipeline.cli_docs --default COMMAND FLAG` prints one flag's default: the Makefile asks it
where a recipe needs a value (make serve's model name) instead of keeping a copy.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import NamedTuple

from pipeline.cli import build_parser

MAKEFILE = Path(__file__).resolve().parents[1] / "Makefile"
_DEFAULT = re.compile(r" \(default: (.*)\)$")
_OPTIONAL = re.compile(r"\$\(call optional,(--[\w-]+),.*?\$\(([A-Z_]+)\)")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def flag_of(action: argparse.Action) -> str:
    return max(action.option_strings, key=len)


def documented_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and a.dest != "help"
            and not isinstance(a, argparse._SubParsersAction)]


def default_and_help(action: argparse.Action) -> tuple[str, str]:
    """The default as the help shows it ("(default: X)" comes from the dataclass field), and the help without it."""
    text = (action.help or "").replace("%%", "%")
    found = _DEFAULT.search(text)
    if found:
        return found.group(1), text[:found.start()]
    if action.required:
        return "required", text
    if isinstance(action, argparse._StoreConstAction):
        return "not given", text
    return "—", text


class MakeVariable(NamedTuple):
    name: str
    flags: tuple[tuple[str, str], ...]  # (command, flag) it becomes, when set
    targets: tuple[str, ...]
    default: str = ""  # only for variables that are no flag: the Makefile's own ?= value
    about: str = ""


def _logical_lines(text: str) -> list[str]:
    return text.replace("\\\n", " ").splitlines()


def recipes(text: str) -> list[tuple[str, str]]:
    """(target, recipe line) with the Makefile's own macros (DATA_FLAGS, ...) written out."""
    lines = _logical_lines(text)
    macros = {m[1]: m[2] for m in (re.match(r"^([A-Z_]+)\s*=\s*(.*)$", ln) for ln in lines) if m}

    def expand(body: str) -> str:
        for _ in range(5):  # macros inside macros
            body = re.sub(r"\$\(([A-Z_]+)\)", lambda m: macros.get(m[1], m[0]), body)
        return body

    out, target = [], None
    for line in lines:
        rule = re.match(r"^([a-z][a-z-]*):", line)
        if rule:
            target = rule.group(1)
        elif line.startswith("\t") and target:
            out.append((target, expand(line)))
        else:
            target = None
    return out


def commands_of_targets(text: str) -> dict[str, set[str]]:
    """command -> the Make targets that run `python -m pipeline command`."""
    out: dict[str, set[str]] = {}
    for target, line in recipes(text):
        for command in re.findall(r"-m pipeline ([a-z-]+)", line):
            out.setdefault(command, set()).add(target)
    return out


def make_variables(text: str) -> list[MakeVariable]:
    """Every variable a user can set: those passed on as a flag (`$(call optional,--flag,$(VAR))` in a recipe
    that runs `python -m pipeline COMMAND`) and those declared with `?=` (not flags), with the comment above."""
    flags: dict[str, set] = {}
    used: dict[str, set] = {}
    for target, line in recipes(text):
        command = re.search(r"-m pipeline ([a-z-]+)", line)
        for name in re.findall(r"\$\(([A-Z_]+)\)", line):
            used.setdefault(name, set()).add(target)
        for flag, name in _OPTIONAL.findall(line):
            if command:
                flags.setdefault(name, set()).add((command.group(1), flag))
    lines = _logical_lines(text)
    declared = {}
    for before, line in zip([""] + lines, lines):
        m = re.match(r"^([A-Z_]+)\s*\?=\s*(.*)$", line)
        if m:
            declared[m[1]] = (m[2].strip(), before[2:] if before.startswith("# ") else "")
    out = [MakeVariable(n, tuple(sorted(flags[n])), tuple(sorted(used.get(n, ())))) for n in sorted(flags)]
    out += [MakeVariable(n, (), tuple(sorted(used.get(n, ()))), *declared[n]) for n in sorted(declared)]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render(parser: argparse.ArgumentParser | None = None, makefile: str | None = None) -> str:
    parser = parser or build_parser()
    makefile = MAKEFILE.read_text() if makefile is None else makefile
    variables, targets_of = make_variables(makefile), commands_of_targets(makefile)
    out = ["# Command-line reference", "",
           "Generated from the parser (`make docs`, i.e. `python -m pipeline.cli_docs > docs/cli.md`); "
           "`tests/unit/test_cli_docs.py` fails when it is stale. Every default below is a field default in "
           "`pipeline/config.py` or `pipeline/command_config.py`, written nowhere else: the Makefile passes a "
           "flag only when you set its variable.", "",
           "Global flags go before the command name:", "", "| flag | default | what it does |", "|---|---|---|"]
    for action in documented_actions(parser):
        default, text = default_and_help(action)
        out.append(f"| `{flag_of(action)}` | {_cell(default)} | {_cell(text)} |")
    for name, sub in subcommands(parser).items():
        out += ["", f"## python -m pipeline {name}", "", sub.description or ""]
        makes = sorted(targets_of.get(name, ()))
        if makes:
            out += ["", "Run by " + ", ".join(f"`make {t}`" for t in makes) + "."]
        for group in sub._action_groups:
            actions = [a for a in group._group_actions if a.dest != "help"]
            if not actions:
                continue
            title = "flags" if group.title == "options" else group.title
            out += ["", f"**{title}**", "", "| flag | default | what it does |", "|---|---|---|"]
            for action in actions:
                default, text = default_and_help(action)
                shown = flag_of(action) if action.option_strings else action.dest.upper()
                out.append(f"| `{shown}` | {_cell(default)} | {_cell(text)} |")
    out += ["", "## Make variables", "",
            "Set on the command line, e.g. `make search TRIALS=20 BACKBONE=mobilenetv2`. A variable you do not "
            "set passes nothing, so the command's own default above holds.", "",
            "| variable | becomes (the default when not set) | targets |", "|---|---|---|"]
    commands = subcommands(parser)
    for var in (v for v in variables if v.flags):
        becomes = "; ".join(f"`{command} {flag}` ({_cell(_shown_default(commands[command], flag))})"
                            for command, flag in var.flags)
        out.append(f"| `{var.name}` | {becomes} | {', '.join(var.targets)} |")
    out += ["", "Variables that are no flag of `python -m pipeline` keep their default in the Makefile:", "",
            "| variable | default | what it is |", "|---|---|---|"]
    for var in (v for v in variables if not v.flags):
        out.append(f"| `{var.name}` | {_cell(var.default) or '(empty)'} | {_cell(var.about)} |")
    out += ["", "## Adding a flag", "",
            "Add a field to the step's dataclass in `pipeline/config.py` (or the command's in "
            "`pipeline/command_config.py`) with `setting(default, help)`, and its check to `__post_init__`; "
            "every command that takes the dataclass gets the flag, with its type, default and help. A command "
            "that needs another default names it once in `COMMAND_DEFAULTS`. A Make variable for it is one "
            "`$(call optional,--flag,$(VAR))` in the Makefile. Then `make docs`."]
    return "\n".join(out) + "\n"


def _shown_default(sub: argparse.ArgumentParser, flag: str) -> str:
    return default_and_help(next(a for a in sub._actions if flag in a.option_strings))[0]


def default_of(command: str, flag: str) -> str:
    sub = subcommands(build_parser())[command]
    action = next(a for a in sub._actions if flag in a.option_strings)
    return str(action.default)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--default"] and len(argv) == 3:
        print(default_of(argv[1], argv[2]))
    elif not argv:
        sys.stdout.write(render())
    else:
        print("usage: python -m pipeline.cli_docs [--default COMMAND FLAG]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
