"""A full disk, for real: a 1 MiB tmpfs mounted for the test (root only; skipped, saying so, elsewhere).
The probe got a traceback and a partial cache file that kept the disk full, and an empty predictions.csv."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, search_argv

pytestmark = pytest.mark.slow  # subprocesses; the search one builds a backbone


@pytest.fixture
def tiny_disk(tmp_path):
    """A real 1 MiB file system: writes past it fail with ENOSPC as on a full disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _files(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def _run(*argv, cwd):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update({"PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true", "TF_CPP_MIN_LOG_LEVEL": "3"})
    return subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def _one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def test_image_cache_on_a_full_disk_is_one_error_line_and_leaves_no_partial_file(synthetic_dir, tiny_disk,
                                                                                  tmp_path):
    cache = tiny_disk / "cache"
    flags = ["--data-dir", str(synthetic_dir), "--cache-dir", str(cache), "--seed", "0"]
    line = _one_error_line(_run("data-check", *flags, "--image-size", "224", cwd=tmp_path))  # 44 x 224 px: 2.1 MiB
    assert line.startswith(f"error: no space left on the disk of {cache / 'images'}: free space there or choose "
                           "another --cache-dir"), line
    assert _files(tiny_disk) == [], "a partial cache file was left behind"

    small = _run("data-check", *flags, "--image-size", "32", cwd=tmp_path)  # control: 44 KiB fits
    assert small.returncode == 0, small.stderr[-3000:]
    assert len([f for f in _files(tiny_disk) if f.endswith(".npy")]) == 1


def test_feature_cache_on_a_full_disk_is_one_error_line_and_leaves_no_partial_entry(synthetic_dir, tiny_disk,
                                                                                    tmp_path):
    # the 32 px image cache fits in 1 MiB, the MobileNetV2 backbone saved with the features (9 MiB) does not
    result = _run(*search_argv(synthetic_dir, tiny_disk / "cache", "optuna", 1, "t-full"), cwd=tmp_path)
    line = _one_error_line(result)
    assert line.startswith(f"error: no space left on the disk of {tiny_disk / 'cache' / 'features'}: free space "
                           "there or choose another --cache-dir"), line
    left = [f for f in _files(tiny_disk) if not f.endswith(".lock")]  # the builders' lock files are empty
    assert left and all(f.startswith("cache/images/") for f in left), left  # the complete image entry only
    assert not [p for p in (tiny_disk / "cache" / "features").iterdir() if p.is_dir()], "a partial entry was left"


def test_predict_on_a_full_disk_is_one_error_line_and_leaves_no_empty_csv(registry, tiny_disk, synthetic_dir):
    output = tiny_disk / "predictions"
    output.mkdir()
    with (tiny_disk / "filler").open("wb", buffering=0) as filler:  # fill the disk to the last byte
        try:
            while True:
                filler.write(b"\0" * 4096)
                filler.flush()
        except OSError:
            pass
    films = sorted((synthetic_dir / "test" / "NORMAL").glob("*.jpeg"))[:2]
    line = _one_error_line(_run("predict", "--model", "models:/trained/1", "--output", str(output),
                                *map(str, films), cwd=registry))
    assert line.startswith(f"error: no space left on the disk of {output}: free space there or choose another "
                           "--output"), line
    assert _files(output) == [], "predict left a partial or empty file"
