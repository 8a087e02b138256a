"""`make data`: fetch the Kaggle chest X-ray set with kagglehub, all or nothing."""
from __future__ import annotations

import shutil
import socket
from pathlib import Path

from pipeline.config import ConfigError

HANDLE = "paultimothymooney/chest-xray-pneumonia"
MANUAL = (f"Download it by hand from https://www.kaggle.com/datasets/{HANDLE} (chest-xray-pneumonia.zip), "
          "unzip it and point DATA_DIR at the folder that holds train/ and test/ "
          "(e.g. make search DATA_DIR=/data/chest_xray), or try everything first on synthetic data: make demo")


class DownloadError(ConfigError):
    """The dataset could not be fetched; the message says what to do instead."""


def _reachable(host: str = "www.kaggle.com", port: int = 443, timeout: float = 5.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def find_root(folder: Path) -> Path | None:
    """The folder inside a download that has train/ and test/ (the zip nests chest_xray/ twice)."""
    for candidate in sorted([folder, *folder.rglob("*")], key=lambda p: len(p.parts)):
        names = {p.name.lower() for p in candidate.iterdir() if p.is_dir()} if candidate.is_dir() else set()
        if {"train", "test"} <= names:
            return candidate
    return None


def download(target: Path) -> Path:
    """Fetch into the kagglehub cache, then move a complete copy to `target` in one rename."""
    target = Path(target)
    if find_root(target) if target.is_dir() else False:
        print(f"{target} already holds the dataset; nothing downloaded")
        return target
    if target.exists() and any(target.iterdir()):
        raise DownloadError(f"{target} exists, is not empty and has no train/ and test/; move it away first")
    if not _reachable():
        raise DownloadError(f"cannot reach www.kaggle.com (offline or behind a firewall). {MANUAL}")
    import kagglehub

    try:
        cached = Path(kagglehub.dataset_download(HANDLE))
    except Exception as err:  # kagglehub raises several kinds (auth, HTTP, network)
        raise DownloadError(f"kagglehub could not download {HANDLE} ({err.__class__.__name__}: {err}). "
                            f"Kaggle credentials: ~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY. {MANUAL}") from err
    root = find_root(cached)
    if root is None:
        raise DownloadError(f"the download in {cached} has no train/ and test/ folders. {MANUAL}")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(root, partial)
    if target.exists():
        target.rmdir()
    partial.rename(target)  # only a complete copy ever carries the final name
    print(f"dataset ready in {target}")
    return target
