"""Helpers the test modules share (fixtures live in conftest.py): command lines and paths, one home each."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMOKE_SPACE = str(REPO / "search_spaces" / "smoke.yaml")
RETRAIN_ARGV = ["retrain-best", "--experiment", "t-registry", "--epochs", "1", "--fine-tune-epochs", "1",
                "--fine-tune-layers", "all", "--gradcam-images", "4"]


def search_argv(data_dir: Path, cache: Path, engine: str, trials: int, experiment: str, *extra: str) -> list[str]:
    """The smallest real search: 32 px MobileNetV2 from a random start, the smoke space, 2 epochs per trial."""
    return ["search", "--data-dir", str(data_dir), "--cache-dir", str(cache), "--engine", engine,
            "--trials", str(trials), "--epochs", "2", "--backbone", "mobilenetv2", "--weights", "none",
            "--image-size", "32", "--space", SMOKE_SPACE, "--experiment", experiment, "--augment-views", "1",
            "--gradcam-images", "4", *extra]


def runs_of(experiment: str):
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_runs([exp.experiment_id], output_format="list")


class Expired(BaseException):
    """Not an Exception, so that no `except Exception` on the way (Optuna's catch=) can swallow it."""


@contextmanager
def time_limit(seconds: int, what: str):
    """Fail a step that would wait forever (a resumed search waiting on a dead trial) instead of hanging the suite."""
    import signal

    def expired(signum, frame):
        raise Expired(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
