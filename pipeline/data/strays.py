"""Entries of a data set that no split or class reads: a third class folder (COVID/), an image lying
directly in train/, a folder beside the splits. None of them is used; data-check lists each with the
reason, so that nothing drops out of a data set unnoticed."""
from __future__ import annotations

from pathlib import Path


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(folder.iterdir())
    except OSError:  # the scan itself reports a folder it cannot list
        return []


def _files_under(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.is_file())


def unused_entries(data_dir: Path, splits: tuple[str, ...], classes: tuple[str, ...]) -> list[dict]:
    """{path, reason} for every entry of the data root and of its split folders that is neither a split
    nor a class folder (names compared case-insensitively, as the scan does)."""
    wanted_splits, wanted_classes = {s.lower() for s in splits}, {c.lower() for c in classes}
    class_list = " and ".join(f"{c}/" for c in classes)
    found = []
    for entry in _entries(Path(data_dir)):
        if entry.is_dir() and entry.name.lower() in wanted_splits:
            found.extend(_in_split(entry, wanted_classes, class_list))
        elif entry.is_dir():
            found.append({"path": str(entry), "reason": f"a folder that is not a split ({_files_under(entry)} file(s) "
                          f"not used): only {', '.join(f'{s}/' for s in splits)} are read"})
    return found


def _in_split(split_dir: Path, wanted_classes: set[str], class_list: str) -> list[dict]:
    found = []
    for entry in _entries(split_dir):
        if entry.is_dir() and entry.name.lower() in wanted_classes:
            continue
        if entry.is_dir():
            reason = (f"a folder that is not a class ({_files_under(entry)} file(s) not used): only {class_list} are "
                      "read; move its images into one of them if they belong to that class")
        else:
            reason = f"lies directly in {split_dir.name}/, outside {class_list}: not used; move it into its class folder"
        found.append({"path": str(entry), "reason": reason})
    return found
