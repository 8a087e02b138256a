"""search -> retrain-best -> promote -> predict against a real SQLite-backed MLflow registry."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline import tracking
from pipeline.cli import main
from pipeline.config import PromoteConfig
from pipeline.registry import CHALLENGER, CHAMPION, PREVIOUS, promote, register, rollback

from .test_search import search_argv

pytestmark = pytest.mark.slow  # real Keras training, MLflow registry
MODEL = "test-classifier"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_dir, shared_cache):
    """One search and one retrain-best for the whole module (they are the slow part)."""
    work = tmp_path_factory.mktemp("registry")
    mp = pytest.MonkeyPatch()
    mp.chdir(work)
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(search_argv(synthetic_dir, shared_cache, "optuna", 2, "t-registry")) == 0
    assert main(["retrain-best", "--experiment", "t-registry", "--epochs", "1", "--fine-tune-epochs", "1",
                 "--fine-tune-layers", "all", "--model-name", MODEL, "--gradcam-images", "4"]) == 0
    tracking.connect()
    yield work
    mp.undo()


def version(alias: str) -> str:
    return MlflowClient().get_model_version_by_alias(MODEL, alias).version


def test_retrain_registers_an_evaluated_challenger_with_lineage(trained):
    client = MlflowClient()
    v = client.get_model_version_by_alias(MODEL, CHALLENGER)
    for tag in ("test_auc", "test_accuracy", "test_sensitivity", "test_specificity", "threshold"):
        assert 0.0 <= float(v.tags[tag]) <= 1.0
    run = client.get_run(v.tags["retrain_run_id"])
    search = client.get_run(run.data.tags["search_run_id"])
    assert search.data.tags["pipeline.run_type"] == "search"
    assert run.data.tags["best_trial"] == search.data.tags["best_trial"]
    assert run.data.tags["data_fingerprint"] == search.data.tags["data_fingerprint"]
    files = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/confusion_matrix.png", "evaluation/roc_curve.png", "evaluation/gradcam_test.png"} <= files
    assert {"test_auc", "test_pr_auc", "test_specificity", "test_f1_at_0.5"} <= set(run.data.metrics)
    model_files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/MLmodel" in model_files and "model/input_example.json" in model_files


def _new_version(auc: float, sensitivity: float = 0.97, evaluation: str = "complete") -> str:
    """A real new version of the same logged model, with its own recorded evaluation."""
    source = MlflowClient().get_model_version_by_alias(MODEL, CHALLENGER)
    tags = {**source.tags, "test_auc": auc, "test_sensitivity": sensitivity, "evaluation": evaluation}
    return register(f"runs:/{source.run_id}/model", MODEL, tags).version


def test_promotion_refuses_worse_accepts_better_and_rolls_back(trained):
    cfg = PromoteConfig(margin=0.01, min_sensitivity=0.9)
    first = _new_version(0.90)
    decision = promote(MODEL, cfg)
    assert decision.promoted and version(CHAMPION) == first  # no champion yet: first evaluated one wins

    _new_version(0.905)  # better, but by less than the margin
    decision = promote(MODEL, cfg)
    assert not decision.promoted and "margin" in decision.reason and version(CHAMPION) == first

    _new_version(0.99, sensitivity=0.80)  # better AUC, but misses too many pneumonias
    decision = promote(MODEL, cfg)
    assert not decision.promoted and "sensitivity" in decision.reason and version(CHAMPION) == first

    _new_version(0.99, evaluation="failed")
    decision = promote(MODEL, cfg)
    assert not decision.promoted and version(CHAMPION) == first

    better = _new_version(0.95)
    decision = promote(MODEL, cfg)
    assert decision.promoted and version(CHAMPION) == better and version(PREVIOUS) == first

    rollback(MODEL)
    assert version(CHAMPION) == first and version(PREVIOUS) == better


def test_promote_and_predict_commands(trained, synthetic_dir, tmp_path, capsys):
    client = MlflowClient()
    for alias in (CHAMPION, PREVIOUS):
        try:
            client.delete_registered_model_alias(MODEL, alias)
        except mlflow.exceptions.MlflowException:
            pass
    assert main(["promote", "--model-name", MODEL, "--min-sensitivity", "0"]) == 0
    assert "champion" in capsys.readouterr().out
    good = sorted((synthetic_dir / "test" / "PNEUMONIA").iterdir())[0]
    corrupt = tmp_path / "corrupt.jpeg"
    corrupt.write_bytes(b"\xff\xd8\xff" + b"not really a jpeg" * 10)
    out = tmp_path / "overlays"
    code = main(["predict", "--model", f"models:/{MODEL}@{CHAMPION}", "--output", str(out), str(good), str(corrupt)])
    captured = capsys.readouterr()
    assert code == 1  # one file failed ...
    assert "corrupt.jpeg" in captured.err
    line = next(row for row in captured.out.splitlines() if good.name in row)  # ... and the other still ran
    prob = float(line.split("p(pneumonia)=")[1].split()[0])
    assert 0.0 <= prob <= 1.0 and ("PNEUMONIA" in line or "NORMAL" in line)
    assert (out / f"{good.stem}_gradcam.png").stat().st_size > 0


def test_promote_without_challenger_is_a_clear_error(trained, capsys):
    assert main(["promote", "--model-name", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_search_best_trial_json_matches_tags(trained):
    exp = mlflow.get_experiment_by_name("t-registry")
    parent = mlflow.search_runs([exp.experiment_id], filter_string="tags.`pipeline.run_type` = 'search'",
                                output_format="list")[0]
    path = MlflowClient().download_artifacts(parent.info.run_id, "best_trial.json", str(trained))
    best = json.loads(Path(path).read_text())
    assert str(best["number"]) == parent.data.tags["best_trial"]
    assert float(parent.data.tags["best.learning_rate"]) == pytest.approx(best["params"]["learning_rate"])
