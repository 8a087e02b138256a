"""Engine-independent search space for the head, read from YAML and validated once."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import ConfigError

PARAMS = ("dense_units", "dropout", "l2", "learning_rate")
_BOUNDS = {"dense_units": (1, 8192), "dropout": (0.0, 0.95), "l2": (0.0, 1.0), "learning_rate": (1e-7, 1.0)}


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "choice" or "float"
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0
    log: bool = False


@dataclass(frozen=True)
class SearchSpace:
    params: tuple[Param, ...]
    source: Path

    def suggest_optuna(self, trial) -> dict[str, Any]:
        out = {}
        for p in self.params:
            if p.kind == "choice":
                out[p.name] = trial.suggest_categorical(p.name, list(p.values))
            else:
                out[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        return out

    def kerastuner_hyperparameters(self):
        import keras_tuner as kt

        hp = kt.HyperParameters()
        for p in self.params:
            if p.kind == "choice":
                hp.Choice(p.name, list(p.values))
            else:
                hp.Float(p.name, p.low, p.high, sampling="log" if p.log else "linear")
        return hp

    @staticmethod
    def from_kerastuner(hp) -> dict[str, Any]:
        return {name: hp.get(name) for name in PARAMS}


def _fail(source: Path, where: str, message: str) -> None:
    raise ConfigError(f"{source}: {where}: {message}")


def _number(source: Path, where: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(source, where, f"expected a number, got {value!r}")
    return float(value)


def _parse_param(source: Path, name: str, spec) -> Param:
    if not isinstance(spec, dict):
        _fail(source, name, f"expected a mapping with 'type', got {spec!r}")
    kind = spec.get("type")
    allowed = {"choice": {"type", "values"}, "float": {"type", "low", "high", "log"}}
    if kind not in allowed:
        _fail(source, f"{name}.type", f"expected 'choice' or 'float', got {kind!r}")
    unknown = set(spec) - allowed[kind]
    if unknown:
        _fail(source, name, f"unknown key(s) {sorted(unknown)} for type {kind}; allowed: {sorted(allowed[kind])}")
    low_bound, high_bound = _BOUNDS[name]
    if kind == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            _fail(source, f"{name}.values", f"expected a non-empty list, got {values!r}")
        for v in values:
            number = _number(source, f"{name}.values", v)
            if not low_bound <= number <= high_bound or (name == "dense_units" and not isinstance(v, int)):
                _fail(source, f"{name}.values", f"{v!r} is outside [{low_bound}, {high_bound}]"
                      + (" or not a whole number" if name == "dense_units" else ""))
        return Param(name, "choice", values=tuple(values))
    if name == "dense_units":
        _fail(source, f"{name}.type", "dense_units takes whole numbers: use type 'choice'")
    for key in ("low", "high"):
        if key not in spec:
            _fail(source, name, f"missing '{key}'")
    low, high = _number(source, f"{name}.low", spec["low"]), _number(source, f"{name}.high", spec["high"])
    log = spec.get("log", False)
    if not isinstance(log, bool):
        _fail(source, f"{name}.log", f"expected true or false, got {log!r}")
    if not low_bound <= low < high <= high_bound:
        _fail(source, name, f"need {low_bound} <= low < high <= {high_bound}, got low={low}, high={high}")
    if log and low <= 0:
        _fail(source, f"{name}.low", f"a log range needs low > 0, got {low}")
    return Param(name, "float", low=low, high=high, log=log)


def yaml_error_message(source: Path, err: yaml.YAMLError) -> str:
    """One first line with file, line, column and problem (1-based, as editors count); PyYAML's excerpt after it."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
    return f"{source}: not valid YAML{where}: {problem}\n" + "\n".join("  " + line for line in str(err).splitlines())


def load_space(path: str | Path) -> SearchSpace:
    """Read a search-space YAML; every error names the file and the key."""
    source = Path(path)
    if not source.is_file():
        raise ConfigError(f"search space file {source} does not exist (see search_spaces/ for examples)")
    try:
        with source.open("rb") as handle:  # PyYAML then names the file in its excerpt and detects the encoding
            raw = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        raise ConfigError(yaml_error_message(source, err)) from None
    except OSError as err:
        raise ConfigError(f"search space file {source} cannot be read ({err.strerror}): check its permissions") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of {', '.join(PARAMS)}, got {type(raw).__name__}")
    unknown = [k for k in raw if k not in PARAMS]
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {unknown}; expected exactly {', '.join(PARAMS)}")
    missing = [k for k in PARAMS if k not in raw]
    if missing:
        raise ConfigError(f"{source}: missing key(s) {missing}; expected exactly {', '.join(PARAMS)}")
    return SearchSpace(tuple(_parse_param(source, name, raw[name]) for name in PARAMS), source)
