"""`evaluate`: any registered version on any labelled folder, as an MLflow run linked to the version."""
from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.evaluate.testset import manifest_of_run
from pipeline.registry.promotion import TEST_FINGERPRINT

pytestmark = pytest.mark.slow  # real Keras model from a real MLflow registry


def test_evaluate_a_version_on_a_folder_tags_it_by_fingerprint(registry, synthetic_dir, capsys):
    # the official-test-split case: the test/ folder alone gives the fingerprint retrain-best recorded
    assert main(["evaluate", "--model", "models:/trained/1", "--data-dir", str(synthetic_dir / "test"),
                 "--experiment", "t-evaluate", "--gradcam-images", "4"]) == 0
    out = capsys.readouterr().out
    version = MlflowClient().get_model_version("trained", "1")
    fp = version.tags[TEST_FINGERPRINT]
    assert f"fingerprint {fp}" in out
    for metric in ("auc", "accuracy", "sensitivity", "specificity"):
        assert f"eval.{fp}.{metric}" in version.tags
    run = MlflowClient().get_run(version.tags[f"eval.{fp}.run_id"])
    assert mlflow.get_experiment(run.info.experiment_id).name == "t-evaluate"  # a new run, linked both ways
    assert run.data.tags["model_name"] == "trained" and run.data.tags["model_version"] == "1"
    assert run.data.tags["test_fingerprint"] == fp
    assert float(version.tags[f"eval.{fp}.auc"]) == pytest.approx(run.data.metrics["test_auc"], abs=1e-6)
    assert {"roc_auc", "accuracy_score", "recall_score", "specificity"} <= set(run.data.metrics)  # mlflow.evaluate
    for metric in ("auc", "accuracy", "sensitivity", "specificity"):  # each figure with its 95% interval
        low, high = (float(version.tags[f"eval.{fp}.{metric}_ci_{end}"]) for end in ("low", "high"))
        assert low <= float(version.tags[f"eval.{fp}.{metric}"]) <= high and high - low > 0.05, metric  # n=12
        assert run.data.metrics[f"test_{metric}_ci_low"] == pytest.approx(low, abs=1e-6)
    assert {"test_precision_ci_low", "test_npv_ci_high", "test_auc_se"} <= set(run.data.metrics)
    r = run.data.metrics
    assert f"auc          {r['test_auc']:.4f} [{r['test_auc_ci_low']:.4f}, {r['test_auc_ci_high']:.4f}]" in out
    table = manifest_of_run(run.info.run_id)
    assert {"sha", "label", "probability"} <= set(table.columns) and table["sha"].is_unique
    assert len(table) == int(run.data.tags["evaluation_images"])  # one row per film, keyed by its content hash
    files = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {f"evaluation/{f}" for f in ("roc_curve.png", "pr_curve.png", "confusion_matrix.png",
                                        "gradcam_test.png")} <= files
    assert [t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"] == ["test"]


def test_evaluate_on_a_folder_without_classes_is_a_clear_error(registry, tmp_path, capsys):
    assert main(["evaluate", "--model", "models:/trained/1", "--data-dir", str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err


def test_evaluate_with_lime_images_logs_the_grid_and_the_mean_agreement(registry, synthetic_dir):
    """What `retrain-best --lime-images N` adds to its test report: the same evaluate code, LIME on."""
    from pipeline.evaluate.step import evaluate_model
    from pipeline.evaluate.testset import labelled_manifest
    from pipeline.infra import tracking
    from pipeline.serving.pyfunc import load

    tracking.setup("t-evaluate-lime")
    with mlflow.start_run() as run:
        evaluate_model(load("models:/trained/1"), labelled_manifest(synthetic_dir / "test"), gradcam_images=4,
                       lime_images=2, lime_samples=20)
    logged = MlflowClient().get_run(run.info.run_id)
    assert 0.0 <= logged.data.metrics["lime_gradcam_agreement"] <= 1.0
    files = {a.path for a in MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/lime_test.png", "evaluation/gradcam_test.png"} <= files
