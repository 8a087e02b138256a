"""`python -m pipeline <command>`: the one entry point; flags become typed configs here, at the edge."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import NamedTuple

from pipeline import commands
from pipeline.command_config import (
    COMMAND_DEFAULTS,
    DataCheckOptions,
    DownloadOptions,
    EvaluateOptions,
    ModelCardOptions,
    PredictOptions,
    PretrainOptions,
    PromoteOptions,
    RetrainOptions,
    SearchOptions,
    ServeOptions,
)
from pipeline.config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    Interrupted,
    ModelConfig,
    PipelineError,
    PreprocessConfig,
    PretrainConfig,
    PromoteConfig,
    RetrainConfig,
    SearchConfig,
)
from pipeline.options import add_flags

DATA = "data"
AUGMENT = "augmentation (fractions, as Keras preprocessing layers take them)"


class Flags(NamedTuple):
    """One config dataclass's flags on a command, under a help heading (None: the command's own list)."""
    cls: type
    group: str | None = None
    only: tuple[str, ...] | None = None  # these fields only (default: every field made with setting())


class Command(NamedTuple):
    name: str
    run: object  # the function in pipeline/commands.py
    help: str
    description: str
    flags: tuple[Flags, ...]


DATA_FLAGS = (Flags(DataConfig, DATA), Flags(PreprocessConfig, DATA))
COMMANDS = (
    Command("data-check", commands.data_check, "count, validate and fingerprint a dataset",
            "Per split and class, how many images will be used; skipped files; fingerprint.",
            (*DATA_FLAGS, Flags(DataCheckOptions))),
    Command("search", commands.search, "hyperparameter search over the head, every trial logged to MLflow",
            "Keras Tuner random search or an Optuna study over the head of a frozen backbone.",
            (*DATA_FLAGS, Flags(ModelConfig, "model"), Flags(AugmentConfig, AUGMENT), Flags(SearchConfig, "search"),
             Flags(SearchOptions, "search"))),
    Command("retrain-best", commands.retrain_best, "retrain the best trial with fine-tuning, evaluate on test, register",
            "Two-stage retraining of a search's best configuration; registers a challenger.",
            (Flags(RetrainOptions), Flags(RetrainConfig))),
    Command("pretrain", commands.pretrain,
            "train a backbone from scratch on the train split, save it for --weights PATH",
            "The offline path: every layer of a random-start backbone trained once on the train split (AdamW, "
            "warmup + cosine, label smoothing); val picks the epoch. The saved no-top weights file is what "
            "search/retrain take as --weights PATH.",
            (*DATA_FLAGS, Flags(AugmentConfig, AUGMENT), Flags(ModelConfig, "pretraining", only=("backbone",)),
             Flags(PretrainConfig, "pretraining"), Flags(PretrainOptions, "pretraining"))),
    Command("promote", commands.promote, "move 'champion' to the challenger if it is better (or --rollback)",
            "Compare challenger and champion on the same test set, film by film (paired DeLong test); promote only "
            "if the criteria pass. Exit 0: "
            "promoted; exit 3: champion kept; exit 2: error.",
            (Flags(PromoteOptions, only=("model_name",)), Flags(PromoteConfig),
             Flags(PromoteOptions, only=("rollback",)))),
    Command("evaluate", commands.evaluate, "evaluate a registered version on any labelled folder, tag the version",
            "Metrics, ROC, PR, confusion matrix and Grad-CAM of MODEL on DATA_DIR (NORMAL/ + PNEUMONIA/, or a "
            "data-set root's test/), as an MLflow run linked to the version.",
            (Flags(EvaluateOptions),)),
    Command("model-card", commands.model_card, "print (or write) the model card of a registered version",
            "The Markdown card of MODEL, from what the registry and its runs hold (also the version's description "
            "in the MLflow UI and the artifact model_card.md of its run).",
            (Flags(ModelCardOptions),)),
    Command("predict", commands.predict, "classify images with a registered model, write Grad-CAM overlays",
            "Load a model from the registry (models:/NAME@ALIAS) and classify images.",
            (Flags(PredictOptions),)),
    Command("serve", commands.serve, "check MODEL, then serve it with `mlflow models serve` (REST, /invocations)",
            "Checks that MODEL resolves in the registry (and PNEUMONIA_SERVE_PATH_ROOT, if set, is a folder), then "
            "runs mlflow models serve on the pinned version.",
            (Flags(ServeOptions),)),
    Command("download", commands.download, "download the Kaggle dataset with kagglehub into --data-dir",
            "Fetch paultimothymooney/chest-xray-pneumonia; fails at once when offline.",
            (Flags(DownloadOptions),)),
)


def _parse_tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--tag {item!r} is invalid: expected NAME=VALUE, e.g. --tag dataset=SYNTHETIC")
        tags[key.strip()] = value
    return tags


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag gives one `error:` line (flag, value, where help is), exit 2, no usage block."""

    def error(self, message: str):
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--tag", action="append", default=[], metavar="NAME=VALUE",
                        help="tag every MLflow run this command writes (repeatable; before the command name)")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.description)
        groups: dict[str | None, object] = {None: p}
        defaults, fields = COMMAND_DEFAULTS.get(command.name, {}), set()
        for flags in command.flags:
            if flags.group not in groups:
                groups[flags.group] = p.add_argument_group(flags.group)
            fields |= add_flags(groups[flags.group], flags.cls, defaults=defaults, only=flags.only)
        if set(defaults) - fields:
            raise TypeError(f"COMMAND_DEFAULTS[{command.name!r}] names no flag of it: {sorted(set(defaults) - fields)}")
        if command.name == "predict":
            p.add_argument("images", nargs="+", help="image files (.jpeg, .jpg, .png), folders or glob patterns")
        p.set_defaults(func=command.run, parser=parser)  # parser: search --workers N starts workers from it
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    try:
        commands.RUN_TAGS.clear()
        commands.RUN_TAGS.update(_parse_tags(args.tag))
        return args.func(args)
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: stopped before anything was saved by this step; run the same command again", file=sys.stderr)
        return 130
    except PipelineError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
