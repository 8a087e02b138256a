"""Private by default: no telemetry, and nothing written to the home folder by a search or a retrain."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, RETRAIN_ARGV, search_argv


def _clean_env(home: Path, **extra: str) -> dict[str, str]:
    """What a fresh shell has: no CI or pytest variables (MLflow turns telemetry off by itself when it sees
    them, which would hide a missing default), no XDG_* folders, no settings of ours; HOME is `home`."""
    env = {"PATH": os.environ["PATH"], "HOME": str(home), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.update(extra)
    return env


def _python(code: str, cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


TELEMETRY_OFF = "import mlflow.telemetry.utils as u; print(u.is_telemetry_disabled())"


def test_mlflow_telemetry_is_off_once_the_package_is_imported(tmp_path):
    env = _clean_env(tmp_path)
    # the control: in this environment MLflow on its own would send usage telemetry
    assert _python(TELEMETRY_OFF, tmp_path, env) == "False"
    assert _python("import pipeline; " + TELEMETRY_OFF, tmp_path, env) == "True"


def test_a_user_can_opt_in_to_telemetry_and_override_folders(tmp_path):
    env = _clean_env(tmp_path, MLFLOW_DISABLE_TELEMETRY="false", KERAS_HOME=str(tmp_path / "k"))
    code = "import os, pipeline; print(os.environ.get('DO_NOT_TRACK'), os.environ['KERAS_HOME']); " + TELEMETRY_OFF
    assert _python(code, tmp_path, env).splitlines() == [f"None {tmp_path / 'k'}", "False"]


def test_library_folders_default_to_the_project_cache(tmp_path):
    code = "import os, pipeline; print(os.environ['KERAS_HOME']); print(os.environ['MPLCONFIGDIR'])"
    assert _python(code, tmp_path, _clean_env(tmp_path / "home")).splitlines() == [
        str(tmp_path / ".cache" / "keras"), str(tmp_path / ".cache" / "matplotlib")]


def _pipeline(argv: list[str], cwd: Path, env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-m", "pipeline", *argv], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_search_and_retrain_write_nothing_to_home(tmp_path, synthetic_dir):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = _clean_env(home)
    _pipeline(search_argv(synthetic_dir, work / ".cache", "optuna", 1, "privacy"), work, env)
    _pipeline([*RETRAIN_ARGV, "--experiment", "privacy", "--model-name", "privacy", "--fine-tune-epochs", "0"], work, env)
    written = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    assert written == [], f"written to HOME: {written}"
    assert not (home / ".config" / "mlflow" / "telemetry.json").exists()
    assert (work / ".cache" / "keras" / "keras.json").is_file()  # Keras's config went to the project instead
    # temporaries went to the project (MLflow leaves the models it downloads there; `make clean` removes them)
    assert (work / ".cache" / "tmp").is_dir()
