"""Configs to MLflow run params and back: one flat, string-valued dict per run, and its exact inverse."""
from __future__ import annotations

import typing
from dataclasses import asdict, fields

from pipeline.checks import _check
from pipeline.errors import ConfigError


def flat_params(*configs) -> dict[str, str]:
    """One flat, string-valued dict for MLflow params (same names in every run)."""
    out: dict[str, str] = {}
    for cfg in configs:
        out.update({k: str(v) for k, v in asdict(cfg).items()})
    return out


def from_params(cls, params: dict[str, str], **overrides):
    """Rebuild a config from the string params a run logged (flat_params' inverse), then validate."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        if f.name in params:
            values[f.name] = _from_param(f.name, params[f.name], hints[f.name])
    values.update(overrides)
    return cls(**values)


def _from_param(name: str, raw: str, kind):
    """One logged string back to its field's type: int, float, str, bool, Path, or one of those | None."""
    options = [t for t in typing.get_args(kind) if t is not type(None)] or [kind]
    if raw == "None" and type(None) in typing.get_args(kind):
        return None
    target = options[0]
    if target is bool:
        _check(raw in ("True", "False"), name, raw, "True or False")
        return raw == "True"
    try:
        return target(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} (a logged run param) is invalid: expected {target.__name__}") from None
