"""Writes that either complete or leave nothing behind: a full disk gives one `error:` line naming the
folder and the way out, instead of a traceback and a partial file that keeps the disk full."""
from __future__ import annotations

import errno
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from pipeline.config import PipelineError

_FULL = {errno.ENOSPC, errno.EDQUOT}
# NumPy's short write (np.save, ndarray.tofile) raises an OSError with no errno, only this message.
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


class DiskFullError(PipelineError):
    """No space left where a step writes; what it had written there is removed."""


def is_disk_full(err: BaseException) -> bool:
    return isinstance(err, OSError) and (err.errno in _FULL or "No space left on device" in str(err)
                                         or bool(_SHORT_WRITE.search(str(err))))


def disk_full(folder: Path, way_out: str) -> DiskFullError:
    return DiskFullError(f"no space left on the disk of {folder}: {way_out}; the partial file was removed")


def check_space(folder: Path, needed: int, way_out: str) -> None:
    """Refuse a write that cannot fit before it starts (with 1 MiB and 5% to spare for file overheads)."""
    free = shutil.disk_usage(folder).free
    if free < needed * 1.05 + 2**20:
        raise DiskFullError(f"no space left on the disk of {folder}: {way_out} (needs about "
                            f"{needed / 2**20:.0f} MiB, {free / 2**20:.0f} MiB free); nothing was written")


def partial_name(target: Path) -> Path:
    """A private name beside `target` with the same suffix (np.save appends .npy to any other name)."""
    return target.with_name(f".{target.stem}.{os.getpid()}.partial{target.suffix}")


@contextmanager
def atomic_path(target: Path, way_out: str):
    """Yield a private path to write `target` to; only a complete file is renamed to the target's name.
    On any failure the private file is removed; a full disk becomes DiskFullError(way_out)."""
    target = Path(target)
    partial = partial_name(target)
    try:
        yield partial
        os.replace(partial, target)
    except BaseException as err:
        partial.unlink(missing_ok=True)
        if is_disk_full(err):
            raise disk_full(target.parent, way_out) from None
        raise


def write_bytes(target: Path, data: bytes, way_out: str) -> None:
    with atomic_path(target, way_out) as partial:
        partial.write_bytes(data)
