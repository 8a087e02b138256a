"""Rollback is not a toggle: the probe's second `make rollback` re-promoted the version just rolled back,
with no criteria checked. A real SQLite registry; the versions point at a placeholder artifact, since
promotion reads tags and each version's per-film probabilities (constructed evaluation runs, so the paired test
has something real to decide on), rollback only aliases (test_registry.py runs them on a trained model)."""
from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.infra import tracking
from pipeline.registry.promotion import CHALLENGER, CHAMPION, KEPT_EXIT_CODE, PREVIOUS, register
from tests.integration.registry.films import constructed_evaluation, films, scores

pytestmark = pytest.mark.slow  # a real MLflow store
FINGERPRINT = "f" * 16


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    tracking.setup("t-rollback")
    with mlflow.start_run() as run:
        mlflow.log_text("placeholder\n", "model/MLmodel")
    return run.info.run_id


LABELS, LATENT, SHAS = films()


def version(run_id: str, noise: float) -> str:
    """A version scored on the same 624 films; less noise on the shared latent: a clearly better model
    (noise 0.5, 0.2, 0: test AUC 0.82, 0.87, 0.92, each gain far beyond the paired test's noise)."""
    tags = constructed_evaluation(LABELS, scores(LATENT, noise, seed=0), SHAS, FINGERPRINT)  # one noise draw, scaled
    return register(f"runs:/{run_id}/model", "m", tags).version


def alias(which: str) -> str | None:
    try:
        return MlflowClient().get_model_version_by_alias("m", which).version
    except mlflow.exceptions.MlflowException:
        return None


def test_a_second_rollback_is_refused_with_exit_3_until_a_promotion_moves_the_champion(store, capsys):
    first = version(store, 0.5)
    assert main(["promote", "--model-name", "m"]) == 0
    second = version(store, 0.2)
    assert main(["promote", "--model-name", "m"]) == 0 and alias(CHAMPION) == second
    assert main(["promote", "--model-name", "m", "--rollback"]) == 0  # the first rollback works ...
    assert alias(CHAMPION) == first and alias(PREVIOUS) == second
    capsys.readouterr()

    assert main(["promote", "--model-name", "m", "--rollback"]) == KEPT_EXIT_CODE  # ... the second one does not
    out = capsys.readouterr().out
    assert out.startswith(f"refused: v{second} is '{PREVIOUS}' because it was just rolled back") and \
        f"champion stays v{first}" in out and f"'{CHALLENGER}' alias and run `make promote`" in out, out
    assert alias(CHAMPION) == first and alias(PREVIOUS) == second  # nothing moved

    third = version(store, 0.0)  # a promotion moves the champion: rolling that back is allowed again
    assert main(["promote", "--model-name", "m"]) == 0 and alias(CHAMPION) == third and alias(PREVIOUS) == first
    assert main(["promote", "--model-name", "m", "--rollback"]) == 0
    assert alias(CHAMPION) == first and alias(PREVIOUS) == third
    assert main(["promote", "--model-name", "m", "--rollback"]) == KEPT_EXIT_CODE and alias(CHAMPION) == first
