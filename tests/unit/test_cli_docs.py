"""docs/cli.md documents what the CLI and the Makefile really have, and every default is written once."""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess

import pytest

from pipeline import cli, cli_docs, command_config
from pipeline.cli import build_parser, main
from pipeline.config import AugmentConfig, PretrainConfig, RetrainConfig, SearchConfig
from pipeline.options import build
from tests.helpers import REPO

DOCS = REPO / "docs" / "cli.md"
MAKEFILE = (REPO / "Makefile").read_text()


def _section(docs: str, command: str) -> str:
    return docs.split(f"## python -m pipeline {command}\n", 1)[1].split("\n## ", 1)[0]


def _options(command: str) -> dict[str, object]:
    sub = cli_docs.subcommands(build_parser())[command]
    return {flag: action for action in sub._actions for flag in action.option_strings}


def test_docs_cli_md_is_current():
    assert DOCS.read_text() == cli_docs.render(), "docs/cli.md is stale: run `make docs`"


def test_every_command_and_flag_is_in_its_section_of_the_docs():
    docs = DOCS.read_text()
    commands = cli_docs.subcommands(build_parser())
    assert {"data-check", "search", "retrain-best", "pretrain", "promote", "evaluate", "predict", "download"} <= set(commands)
    for name, sub in commands.items():
        assert f"## python -m pipeline {name}\n" in docs, f"command {name} missing from docs/cli.md"
        section = _section(docs, name)
        for action in cli_docs.documented_actions(sub):
            if action.option_strings:
                assert f"| `{cli_docs.flag_of(action)}` |" in section, f"{name} {cli_docs.flag_of(action)} undocumented"
    for flag in ("--verbose", "--tag"):
        assert f"| `{flag}` |" in docs.split("\n## ", 1)[0]


def test_every_make_variable_is_documented_and_every_documented_one_exists():
    docs = DOCS.read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", docs, flags=re.M))
    variables = {v.name for v in cli_docs.make_variables(MAKEFILE)}
    # control: the variables a user sets most are found in the Makefile at all
    assert {"DATA_DIR", "TRIALS", "BACKBONE", "MODEL_NAME", "PRETRAIN_EPOCHS", "VENV", "SERVE_PORT"} <= variables
    assert variables == documented, (sorted(variables - documented), sorted(documented - variables))
    used = set(re.findall(r"\$\(([A-Z][A-Z_]+)\)", MAKEFILE))
    internal = {"PY", "VENV", "CURDIR", "MAKEFILE_LIST", "DATA_FLAGS", "SEARCH_FLAGS", "RETRAIN_FLAGS", "MODEL_FLAG"}
    assert used - internal <= variables | {"VENV"}, f"used, not documented: {sorted(used - internal - variables)}"


def test_each_make_variable_becomes_a_real_flag_of_the_command_its_target_runs():
    mapped = [v for v in cli_docs.make_variables(MAKEFILE) if v.flags]
    assert len(mapped) >= 20
    for var in mapped:
        for command, flag in var.flags:
            assert flag in _options(command), f"{var.name} passes {flag}, which `{command}` does not take"
    pretrain = next(v for v in mapped if v.name == "PRETRAIN_EPOCHS")
    assert pretrain.flags == (("pretrain", "--epochs"),)


def test_the_makefile_holds_no_copy_of_a_cli_default():
    variables = cli_docs.make_variables(MAKEFILE)
    flags = {v.name for v in variables if v.flags}
    defined = set(re.findall(r"^(?:export\s+)?([A-Z_]+)\s*[?:]?=", MAKEFILE, flags=re.M))
    assert not flags & defined, f"a default of the CLI is copied into the Makefile: {sorted(flags & defined)}"
    unconditional = [(flag, name) for flag, name in re.findall(r"(--[a-z][\w-]*) \$\(([A-Z_]+)\)", MAKEFILE)
                     if name not in defined]  # the servers' own flags take the Makefile's ports and folders
    assert not unconditional, f"passed even when not set, so the Makefile decides the default: {unconditional}"
    kept = {v.name for v in variables if not v.flags}  # the ?= values that stay are no flag's default
    assert kept <= defined and {"PYTHON", "VENV", "SERVE_PORT", "PG_DIR"} <= kept


def test_makefile_parser_sees_a_flag_and_a_declared_variable():  # control for the checks above
    text = ("# the port\nPORT ?= 80\nFLAGS = $(call optional,--trials,$(TRIALS))\n"
            "search: x ## y\n\t$(PY) -m pipeline search $(FLAGS) \\\n\t\t$(call optional,--seed,$(SEED))\n")
    found = {v.name: v for v in cli_docs.make_variables(text)}
    assert found["TRIALS"].flags == (("search", "--trials"),) and found["SEED"].flags == (("search", "--seed"),)
    assert found["PORT"].flags == () and found["PORT"].default == "80" and found["PORT"].about == "the port"


def _make_dry_run(target: str, *assignments: str) -> list[str]:
    """The `python -m pipeline` argv that `make -n TARGET` would run, with none of the variables in the environment."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    out = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), target, *assignments], cwd=REPO, env=env,
                         capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.replace("\\\n", " ").splitlines() if f"-m pipeline {target}" in ln)
    return line.split("-m pipeline ", 1)[1].split()


def test_make_passes_only_the_variables_a_user_sets():
    assert _make_dry_run("search") == ["search"]
    argv = _make_dry_run("search", "TRIALS=3", "BACKBONE=mobilenetv2", "SEED=7")
    assert argv == ["search", "--seed", "7", "--trials", "3", "--backbone", "mobilenetv2"]
    assert _make_dry_run("retrain-best") == ["retrain-best"]  # the search's data set, not a Makefile default


def test_make_pretrain_trains_what_the_cli_trains():
    argv = _make_dry_run("pretrain")
    assert argv == ["pretrain"], "make pretrain must add nothing the CLI does not choose itself"
    args = build_parser().parse_args(argv)
    assert (args.backbone, args.image_size) == ("mobilenetv2", 224)
    assert build_parser().parse_args(["search"]).backbone == "resnet50"  # control: the override is pretrain's only


def test_changing_one_default_moves_the_cli_its_help_and_the_docs(monkeypatch):
    field = next(f for f in dataclasses.fields(SearchConfig) if f.name == "trials")
    before = cli_docs.render()
    assert "| `--trials` | 10 |" in _section(before, "search")
    monkeypatch.setattr(field, "default", 17)
    parser = build_parser()
    args = parser.parse_args(["search"])
    assert args.trials == 17 and build(SearchConfig, args).trials == 17
    search = cli_docs.subcommands(parser)["search"]
    assert "(default: 17)" in next(a for a in search._actions if a.dest == "trials").help
    after = cli_docs.render(parser)
    assert "| `--trials` | 17 |" in _section(after, "search") and after != before
    assert _make_dry_run("search") == ["search"] and "17" not in MAKEFILE  # the Makefile holds no copy


def test_a_commands_own_default_is_said_once(monkeypatch):
    monkeypatch.setitem(command_config.COMMAND_DEFAULTS, "pretrain", {"backbone": "densenet121"})
    parser = build_parser()
    assert parser.parse_args(["pretrain"]).backbone == "densenet121"
    assert parser.parse_args(["search"]).backbone == "resnet50"
    assert "| `--backbone` | densenet121 |" in _section(cli_docs.render(parser), "pretrain")
    monkeypatch.setitem(command_config.COMMAND_DEFAULTS, "pretrain", {"backbone_typo": "densenet121"})
    with pytest.raises(TypeError, match="backbone_typo"):
        build_parser()


def test_every_flag_of_a_command_comes_from_a_config_field():
    """A flag added the old way (a literal in cli.py) has no field, so its default would be a second copy."""
    loose = {"help", "images"}  # -h, and predict's positional image list
    for command in cli.COMMANDS:
        fields = {f.name for flags in command.flags for f in dataclasses.fields(flags.cls)}
        sub = cli_docs.subcommands(build_parser())[command.name]
        strays = {a.dest for a in sub._actions} - fields - loose
        assert not strays, f"{command.name}: {sorted(strays)} are not config fields"


def test_the_default_the_makefile_asks_for_is_the_parsers(capsys):
    assert cli_docs.main(["--default", "promote", "--model-name"]) == 0
    assert capsys.readouterr().out == "pneumonia-classifier\n"
    assert cli_docs.main(["--bogus"]) == 2


def test_a_flag_that_does_not_parse_is_still_one_error_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["search", "--trials", "many"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err == "error: argument --trials: invalid int value: 'many' (see python -m pipeline search --help)\n"


def test_a_workers_command_line_asks_for_the_same_search():
    """search --workers N starts N processes from the parsed flags: each generated flag (switches included)
    must come back as the same value, or the workers would search another configuration."""
    from pipeline.search.workers import worker_argv

    parser = build_parser()
    asked = ["search", "--no-flip", "--seed", "3", "--max-per-class", "9", "--workers", "2", "--study-name", "s"]
    args = parser.parse_args(asked)
    argv = worker_argv(args, parser)
    assert argv[-2:] == ["--workers", "1"] and "--no-flip" in argv
    again = vars(parser.parse_args(argv))
    assert {k: v for k, v in again.items() if k != "workers"} == {k: v for k, v in vars(args).items() if k != "workers"}
    assert args.flip is False and parser.parse_args(["search"]).flip is True  # control: the switch does something


def test_make_recipe_runs_three_commands_the_cli_accepts(tmp_path):
    """`make recipe` is pretrain -> search on the file pretrain wrote -> retrain-best; every flag parses and every
    value passes its config's checks (the hour-long run itself is measured in docs/results.md, not here)."""
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed")
    out = subprocess.run(["make", "-n", "-f", str(REPO / "Makefile"), "recipe", "DATA_DIR=data"], cwd=REPO,
                         env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
                         capture_output=True, text=True, check=True).stdout
    lines = [ln for ln in out.replace("\\\n", " ").splitlines() if "-m pipeline " in ln]
    assert [ln.split("-m pipeline ", 1)[1].split()[0] for ln in lines] == ["pretrain", "search", "retrain-best"]
    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"")
    argvs = [shlex.split(re.sub(r'"\$\(ls [^)]*\)"', str(weights), ln.split("-m pipeline ", 1)[1])) for ln in lines]
    assert "pretrained/mobilenetv2-192px-" in lines[1]  # the search reads the file the pretrain step wrote
    pretrain, search, retrain = (build_parser().parse_args(a) for a in argvs)
    assert pretrain.image_size == search.image_size == 192 and pretrain.crop == search.crop == 0.7
    cfg = build(RetrainConfig, retrain)
    assert cfg.top_k == 3 and cfg.fine_tune_layers == "all" and retrain.experiment == search.experiment
    for args, classes in ((pretrain, (AugmentConfig, PretrainConfig)), (search, (AugmentConfig, SearchConfig))):
        for cls in classes:
            build(cls, args)  # raises ConfigError on a value out of range
