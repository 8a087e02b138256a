"""Evaluate step: any model on any labelled images -> metrics, ROC / PR / confusion plots, Grad-CAM.

retrain-best (on its test split) and `python -m pipeline evaluate` (on any folder) run the same
`evaluate_model`, so a version's figures mean the same thing wherever they were measured.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score

from pipeline.config import LIME_SAMPLES  # noqa: E402
from pipeline.data.preprocess import ImageError, to_model_input
from pipeline.evaluate.calibration import log_calibration_and_ood, ood_tags
from pipeline.evaluate.metrics import binary_metrics, test_report
from pipeline.evaluate.plots import confusion_figure, pr_figure, roc_figure
from pipeline.evaluate.testset import (
    EvaluationError,
    manifest_of_run,
    still_on_disk,
    test_fingerprint,
    with_content_hash,
)
from pipeline.explain.gradcam import grid_figure
from pipeline.explain.lime import explain_test_images, misclassified_first
from pipeline.infra import tracking
from pipeline.registry.promotion import eval_tags, tag_version, version_uri
from pipeline.serving.pyfunc import load, read_path

log = logging.getLogger(__name__)


def pick_gradcam_cases(y_true: np.ndarray, proba: np.ndarray, threshold: float, count: int,
                       seed: int = 0) -> np.ndarray:
    """Misclassified images first (they are what a reviewer needs to see), then correct ones of each class."""
    rng = np.random.default_rng(seed)
    wrong = np.flatnonzero((proba >= threshold) != y_true.astype(bool))
    right = np.setdiff1d(np.arange(len(y_true)), wrong)
    picks = list(rng.permutation(wrong)[: count // 2])
    for label in (0, 1):
        pool = rng.permutation(right[y_true[right] == label])
        picks.extend(pool[: (count - len(picks)) // (2 - label)])
    return np.array(sorted(picks), dtype=np.int64)


# ---- which images: a labelled folder, or a data set's test split -------------------------------------------


# ---- the evaluate step ----------------------------------------------------------------------------------

@dataclass
class Evaluation:
    fingerprint: str
    report: dict[str, float]  # test_* names, as test_report gives them
    manifest: pd.DataFrame  # the images evaluated, in order, with `probability`
    run_id: str

    def summary(self) -> dict[str, float]:
        """The four figures promotion and the version tags use, with their 95% intervals."""
        names = [f"{k}{end}" for k in ("auc", "accuracy", "sensitivity", "specificity")
                 for end in ("", "_ci_low", "_ci_high")]
        return {k: self.report[f"test_{k}"] for k in names if f"test_{k}" in self.report}


def _mlflow_metrics():
    """ROC-AUC, PR-AUC and specificity for mlflow.models.evaluate, read from the table's probability column."""
    from mlflow.models import make_metric

    def roc_auc(predictions, targets, metrics, probability):
        return float(roc_auc_score(targets, probability))

    def pr_auc(predictions, targets, metrics, probability):
        return float(average_precision_score(targets, probability))

    def specificity(predictions, targets, metrics):
        return binary_metrics(np.asarray(targets), np.asarray(predictions, dtype=float), 0.5)["specificity"]

    return [make_metric(eval_fn=f, greater_is_better=True, name=f.__name__) for f in (roc_auc, pr_auc, specificity)]


def _predict_files(model, paths: list[str]) -> tuple[np.ndarray, list[int]]:
    """The model's view of each readable file, and the indices that could be read."""

    grays, kept = [], []
    for i, path in enumerate(paths):
        try:
            grays.append(model.gray(read_path(path), path))
            kept.append(i)
        except ImageError as err:
            log.warning("skipping %s", err)
    return np.asarray(grays), kept


def evaluate_model(model, manifest: pd.DataFrame, gradcam_images: int = 8, seed: int = 0,
                   dataset_name: str = "test", lime_images: int = 0, lime_samples: int = LIME_SAMPLES) -> Evaluation:
    """Inside the active run: predict every file with the pyfunc's own preprocessing and threshold, log the
    manifest as the run's `test` input, metrics (through mlflow.models.evaluate), ROC, PR, confusion matrix
    and a Grad-CAM grid. `model` is a serving.PneumoniaModel (serving.load)."""
    import mlflow

    grays, kept = _predict_files(model, manifest["path"].tolist())
    manifest = with_content_hash(manifest.iloc[kept].reset_index(drop=True))
    if manifest.empty or manifest["label"].nunique() < 2:
        raise EvaluationError("fewer than two classes of readable images to evaluate on")
    labels = manifest["label"].to_numpy(dtype=np.int64)
    outputs = model.outputs(grays)  # served (calibrated) probability, raw one and OOD score in one pass
    proba = outputs.probability
    threshold = model.threshold
    fp = test_fingerprint(manifest)

    tracking.log_dataset_input(manifest.drop(columns=["probability"], errors="ignore"),
                               os.path.commonpath(manifest["path"].tolist()), f"{dataset_name}-{fp}", "test")
    table = manifest.assign(probability=proba, prediction=(proba >= threshold).astype(int),
                            ood_score=outputs.ood_score, in_distribution=outputs.in_distribution)
    with warnings.catch_warnings():
        # mlflow's classifier evaluator re-scores per-class slices and warns about one-class slices and
        # integer schemas; the report's own metrics (test_report, both classes checked above) are unaffected
        warnings.simplefilter("ignore", UserWarning)
        mlflow.models.evaluate(data=table[["label", "prediction", "probability"]], targets="label",
                               predictions="prediction", model_type="classifier", extra_metrics=_mlflow_metrics(),
                               evaluator_config={"log_model_explainability": False})
    report = test_report(labels, proba, threshold)
    mlflow.log_metrics({k.replace("@", "_"): v for k, v in report.items()})
    report.update(log_calibration_and_ood(model, outputs, labels))
    mlflow.set_tags({"test_fingerprint": fp, "evaluation_images": str(len(table))})
    mlflow.log_text(table.to_csv(index=False), "evaluation/predictions.csv")
    tracking.log_figure(confusion_figure(labels, proba, threshold), "evaluation/confusion_matrix.png")
    tracking.log_figure(roc_figure(labels, proba, threshold), "evaluation/roc_curve.png")
    tracking.log_figure(pr_figure(labels, proba, threshold), "evaluation/pr_curve.png")
    if gradcam_images:
        log_gradcam_grid(model, grays, labels, proba, threshold, gradcam_images, seed)
    if lime_images:
        log_lime_grid(model, grays, labels, proba, threshold, lime_images, seed, lime_samples)
    return Evaluation(fp, report, table, mlflow.active_run().info.run_id)


def log_gradcam_grid(model, grays: np.ndarray, labels: np.ndarray, proba: np.ndarray, threshold: float,
                     count: int, seed: int = 0, artifact: str = "evaluation/gradcam_test.png") -> None:
    """Grad-CAM of the evaluated images a reviewer should see first (misclassified ones), as one grid."""

    idx = pick_gradcam_cases(labels, proba, threshold, count, seed)
    if not len(idx):
        return
    cams = model.gradcam(to_model_input(grays[idx]))
    tracking.log_figure(grid_figure(grays[idx], cams, labels[idx], proba[idx], threshold=threshold,
                                    title=f"Grad-CAM on test images (red: misclassified at {threshold:.3f})"),
                        artifact)


def log_lime_grid(model, grays: np.ndarray, labels: np.ndarray, proba: np.ndarray, threshold: float,
                  count: int, seed: int = 0, samples: int = LIME_SAMPLES) -> None:
    """LIME on the images the Grad-CAM grid shows (misclassified first), and how far the two agree:
    the nan-mean agreement becomes the run's metric `lime_gradcam_agreement`, so runs sort by it."""
    import mlflow

    idx = misclassified_first(pick_gradcam_cases(labels, proba, threshold, count, seed), labels, proba, threshold)
    if not len(idx):
        return
    print(f"LIME on {len(idx)} test images ({samples} samples each)", flush=True)
    fig, agreements = explain_test_images(model, model.gradcam_layer, grays, labels, proba, threshold, idx,
                                          samples=samples, seed=seed)
    tracking.log_figure(fig, "evaluation/lime_test.png")
    if np.isfinite(agreements).any():
        mlflow.log_metric("lime_gradcam_agreement", float(np.nanmean(agreements)))


def evaluate_version(version, manifest: pd.DataFrame, gradcam_images: int = 8, tags: dict | None = None,
                     dataset_name: str = "evaluation") -> Evaluation:
    """`make evaluate`: one MLflow run linked to the model version (tags, and the version's
    `eval.<fingerprint>.*` tags back to the run), in the experiment already set."""
    import mlflow

    uri = version_uri(version)
    model = load(uri)
    run_tags = {tracking.RUN_TYPE: "evaluate", "model_name": version.name, "model_version": str(version.version),
                "model_uri": uri, "model_run_id": version.run_id or "", **(tags or {})}
    with mlflow.start_run(run_name=f"evaluate-{version.name}-v{version.version}", tags=run_tags):
        mlflow.log_params({"model_uri": uri, "threshold": model.threshold, "image_size": model.preprocess_cfg.image_size})
        result = evaluate_model(model, manifest, gradcam_images=gradcam_images, dataset_name=dataset_name)
    tag_version(version.name, version.version, {**eval_tags(result.fingerprint, result.summary(), result.run_id,
                                                            len(result.manifest)),
                                                **ood_tags(result.fingerprint, result.report)})
    return result


EVALUATE_EXPERIMENT = "pneumonia-evaluate"


def evaluate_like(version, reference, fingerprint: str, tags: dict | None = None):
    """Evaluate `version` on the images `reference` was evaluated on (fingerprint), if they are all still
    on disk unchanged; the re-read version (with its new eval tags), or None when that is impossible."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run_id = reference.tags.get(f"eval.{fingerprint}.run_id")
    if not run_id:
        return None
    try:
        manifest = manifest_of_run(run_id)
    except (MlflowException, OSError):  # the reference evaluation run is gone: nothing to repeat
        return None
    if not {"path", "label", "sha"} <= set(manifest.columns) or not still_on_disk(manifest):
        return None
    columns = [c for c in ("path", "label", "class_name", "split", "sha") if c in manifest.columns]
    result = evaluate_version(version, manifest[columns], gradcam_images=0, tags=tags)
    if result.fingerprint != fingerprint:
        return None
    return MlflowClient().get_model_version(version.name, version.version)
