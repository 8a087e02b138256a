"""The README documents what the Makefile and the CLI really have."""
from __future__ import annotations

import argparse
import re

from pipeline.cli import build_parser
from tests.helpers import REPO

README = (REPO / "README.md").read_text()
MAKEFILE = (REPO / "Makefile").read_text()


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, flags=re.M))


def make_variables() -> set[str]:
    return set(re.findall(r"^([A-Z_]+)\s*[?:]?=", MAKEFILE, flags=re.M))


def test_every_make_command_in_the_readme_exists():
    used = set(re.findall(r"\bmake ([a-z][a-z-]*)", README))
    assert used, "the README shows no make command"
    assert used <= make_targets(), f"README uses missing targets: {sorted(used - make_targets())}"
    assert {"demo", "test", "search", "retrain-best", "promote", "predict", "ui", "data"} <= used


def test_every_make_variable_in_the_readme_exists_and_every_variable_is_documented():
    documented = set(re.findall(r"^\| `([A-Z_]+)`", README, flags=re.M))
    inline = set(re.findall(r"\b([A-Z][A-Z_]+)=", README)) - {"MLFLOW_TRACKING_URI"}
    variables = make_variables() - {"PY", "DATA_FLAGS", "SEARCH_FLAGS"}
    assert inline <= variables, f"README sets unknown variables: {sorted(inline - variables)}"
    assert variables <= documented | {"PYTHON", "VENV"}, f"undocumented: {sorted(variables - documented)}"


def test_every_cli_flag_is_documented():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        assert f"python -m pipeline {name}" in README, f"command {name} missing from the README"
        for action in command._actions:
            if action.option_strings and action.help != argparse.SUPPRESS and action.dest != "help":
                flag = max(action.option_strings, key=len)
                assert f"`{flag}`" in README, f"{name} {flag} missing from the README"


def test_quick_start_is_the_two_bootstrapping_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make demo" in quick and "make test" in quick
    assert "$(VENV)/.installed" in MAKEFILE.split("\ndemo:", 1)[1].splitlines()[0]
    assert "$(VENV)/.installed" in MAKEFILE.split("\ntest:", 1)[1].splitlines()[0]
