"""Command-line flags made from config dataclass fields, so each default, type and help text is written once.

A field becomes a flag through `setting(default, help, ...)` in pipeline/config.py; `add_flags` puts a
dataclass's flags on a parser (default, type and "(default: X)" from the field), `build` makes the
config back from the parsed namespace. The namespace attribute of a flag is always the field's name.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing

HELP, FLAG, CHOICES, METAVAR, SHOWN, REQUIRED = "help", "flag", "choices", "metavar", "default_text", "required"


def setting(default, help: str, *, flag: str | None = None, choices: tuple | None = None, metavar: str | None = None,
            default_text: str | None = None, required: bool = False):
    """A config field that is a flag (a plain field is not one). flag: its name when not --field-name;
    choices: listed in the help, checked by the dataclass (one `error:` line, not argparse's);
    default_text: shown instead of a None default, e.g. what the code derives."""
    meta = {HELP: help, FLAG: flag, CHOICES: choices, METAVAR: metavar, SHOWN: default_text, REQUIRED: required}
    return dataclasses.field(default=default, metadata=meta)


def flag_name(field: dataclasses.Field) -> str | None:
    """The field's flag, or None when it has none: a bool that defaults to True is turned off with --no-NAME."""
    if HELP not in field.metadata:
        return None
    if field.metadata[FLAG]:
        return field.metadata[FLAG]
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True else f"--{name}"


def flag_fields(cls, only: tuple[str, ...] | None = None) -> list[dataclasses.Field]:
    chosen = [f for f in dataclasses.fields(cls) if flag_name(f) and (only is None or f.name in only)]
    missing = set(only or ()) - {f.name for f in chosen}
    if missing:
        raise TypeError(f"{cls.__name__} has no flag for {sorted(missing)}")
    return chosen


def _value_type(cls, field: dataclasses.Field):
    """int, float, str, bool or Path, the `| None` taken off: what argparse turns the text into."""
    kind = typing.get_type_hints(cls)[field.name]
    options = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
    return options[0]


def shown_default(field: dataclasses.Field, default) -> str | None:
    """What "(default: X)" says; None where there is nothing to say (an on/off switch, an unset value)."""
    if field.metadata[SHOWN] is not None:
        return field.metadata[SHOWN]
    if isinstance(default, bool) or default is None or field.metadata[REQUIRED]:
        return None
    return str(default)


def help_text(field: dataclasses.Field, default) -> str:
    text = field.metadata[HELP]
    if field.metadata[CHOICES]:
        text += f" ({', '.join(map(str, field.metadata[CHOICES]))})"
    shown = shown_default(field, default)
    if shown is not None:
        text += f" (default: {shown})"
    return text.replace("%", "%%")  # argparse formats help with %


def add_flags(parser, cls, *, defaults: dict | None = None, only: tuple[str, ...] | None = None) -> set[str]:
    """Add the flags of `cls` to a parser or argument group. defaults: this command's own default for a
    field (e.g. pretrain's backbone), named once in config.COMMAND_DEFAULTS instead of a second literal."""
    defaults = defaults or {}
    for field in flag_fields(cls, only):
        default = defaults.get(field.name, field.default)
        kwargs = {"dest": field.name, "help": help_text(field, default)}
        kind = _value_type(cls, field)
        if kind is bool:
            kwargs["action"] = "store_false" if default else "store_true"
        else:
            kwargs.update(type=kind, default=default)
            kwargs["metavar"] = field.metadata[METAVAR] or flag_name(field).lstrip("-").replace("-", "_").upper()
            if field.metadata[REQUIRED]:
                kwargs.update(required=True, default=None)
        parser.add_argument(flag_name(field), **kwargs)
    return {f.name for f in flag_fields(cls, only)}


def build(cls, args: argparse.Namespace, **fixed):
    """The config from the parsed flags of `cls`; `fixed` fills fields the command line does not set.
    The dataclass validates, so a bad value is one `error:` line naming it."""
    values = {f.name: getattr(args, f.name) for f in flag_fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **fixed})

