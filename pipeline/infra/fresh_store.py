"""A new SQLite store (MLflow's or Optuna's) is built whole under a private name and renamed into place,
one process at a time: commands started together on a fresh store would otherwise all run the schema
migration at once and crash in it, leaving a half-migrated file that breaks every later command."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from filelock import FileLock


def sqlite_file(url: str) -> Path | None:
    """The database file of a sqlite:/// URL; None for other kinds and for in-memory databases."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:  # a plain folder (MLflow's file store), databricks, ...: not ours to create
        return None
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        return Path(parsed.database).resolve()
    return None


def create_once(url: str, initialise: Callable[[str], None]) -> None:
    """Make sure the SQLite store at `url` exists complete. `initialise(url)` creates every table of a
    store at the URL it is given; it runs on a private file that only a finished build renames to the
    real name, under a lock beside it, so no process ever sees a store mid-migration."""
    path = sqlite_file(url)
    if path is None or _complete(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if _complete(path):  # built by another process while this one waited
            return
        partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
        try:
            initialise(f"sqlite:///{partial}")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def _complete(path: Path) -> bool:
    """Only create_once puts a file at the store's name, so any non-empty file there is a finished build
    (an empty one is what `sqlite3 FILE` or a crashed older version leaves)."""
    return path.is_file() and path.stat().st_size > 0
