"""Checks of single values shared by the config dataclasses and the commands: one `error:` line naming the value."""
from __future__ import annotations

import os
import re
from pathlib import Path

from pipeline.errors import ConfigError


def _check(ok: bool, name: str, value, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{name}={value!r} is invalid: expected {expected}")


def _in_range(name: str, value, low, high, *, low_open: bool = False) -> None:
    inside = (value > low if low_open else value >= low) and value <= high
    bracket = "(" if low_open else "["
    _check(inside, name, value, f"a number in {bracket}{low}, {high}]")


SEED_MAX = 2**32 - 1  # NumPy's and scikit-learn's limit for a seed


def check_seed(seed) -> None:
    _check(isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= SEED_MAX, "seed", seed,
           f"a whole number from 0 to {SEED_MAX} (--seed)")


def check_folder(path: Path, name: str, flag: str | None = None) -> Path:
    """A folder that exists or can be made: nothing on the way may be a file. Nothing is created here."""
    path, flag = Path(path), flag or name
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                where = "is a file" if part == path else f"cannot be made because {part} is a file"
                raise ConfigError(f"{name} {path} {where}, not a folder: remove it or choose another {flag}")
            if not os.access(part, os.W_OK | os.X_OK):
                raise ConfigError(f"{name} {path} cannot be written (no permission on {part}): choose another {flag}")
            break
    return path


def check_storage(url: str) -> str:
    """Parse an Optuna storage URL with SQLAlchemy before any work, so a typo fails in one line, not a traceback."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "sqlite:///mlruns/optuna.db or postgresql+psycopg2://user:pass@host/db"
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(f"storage={url!r} is not a database URL: expected e.g. {example} (--storage)") from None
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(f"storage={url!r} names an unknown database kind {parsed.drivername!r}: "
                          f"expected e.g. {example} (--storage)") from None
    try:
        dialect.import_dbapi()
    except ImportError as err:
        raise ConfigError(f"storage={url!r} needs the Python driver {err.name!r}, which is not installed: "
                          f"install it, or name an installed driver, e.g. {example} (--storage)") from None
    folder = sqlite_folder(url)
    if folder is not None:
        check_folder(folder, "the folder of --storage", "--storage")
    return url


def sqlite_folder(url: str) -> Path | None:
    """The folder a SQLite storage file lives in (SQLite makes the file, not the folder); None for other kinds."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).parent
    return None


_MODEL_URI = re.compile(r"^models:/[^/@\s]+(@[A-Za-z0-9_-]+|/[1-9][0-9]*)$")


def check_model_uri(uri: str) -> str:
    """Registry URIs only, checked before MLflow is touched: the threshold and preprocessing live in version tags."""
    _check(isinstance(uri, str) and bool(_MODEL_URI.match(uri)), "model", uri,
           "models:/NAME@ALIAS (e.g. models:/pneumonia-classifier@champion) or models:/NAME/VERSION (--model)")
    return uri
