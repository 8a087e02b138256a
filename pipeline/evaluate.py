"""Evaluate step: any model on any labelled images -> metrics, ROC / PR / confusion plots, Grad-CAM.

retrain-best (on its test split) and `python -m pipeline evaluate` (on any folder) run the same
`evaluate_model`, so a version's figures mean the same thing wherever they were measured.
"""
from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import (ConfusionMatrixDisplay, average_precision_score, confusion_matrix,  # noqa: E402
                             precision_recall_curve, roc_auc_score, roc_curve)

from .config import LIME_SAMPLES, PipelineError  # noqa: E402
from .data import CLASSES  # noqa: E402

log = logging.getLogger(__name__)


class EvaluationError(PipelineError, ValueError):
    """The folder to evaluate on cannot be used (no class folders, one class, no readable image)."""


def choose_threshold(y_true: np.ndarray, proba: np.ndarray, rule: str, target_sensitivity: float = 0.95) -> float:
    """'sensitivity': the highest threshold that still catches target_sensitivity of pneumonia cases
    (missing pneumonia costs more than a false alarm); 'youden': maximise sensitivity + specificity - 1."""
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    thresholds = np.clip(thresholds, 0.0, 1.0)  # sklearn puts +inf first
    if rule == "youden":
        return float(thresholds[int(np.argmax(tpr - fpr))])
    reaching = np.flatnonzero(tpr >= target_sensitivity)
    return float(thresholds[reaching[0]])


def binary_metrics(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    pred = (proba >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, pred, labels=[0, 1]).ravel()

    def ratio(a, b):
        return float(a / b) if b else 0.0

    precision, sensitivity = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {"accuracy": ratio(tp + tn, len(y_true)), "precision": precision, "sensitivity": sensitivity,
            "specificity": ratio(tn, tn + fp), "f1": ratio(2 * precision * sensitivity, precision + sensitivity)}


def test_report(y_true: np.ndarray, proba: np.ndarray, threshold: float) -> dict[str, float]:
    """Metric names as they are recorded on the run and on the registered model version."""
    out = {"test_auc": float(roc_auc_score(y_true, proba)), "test_pr_auc": float(average_precision_score(y_true, proba)),
           "threshold": float(threshold)}
    out.update({f"test_{k}": v for k, v in binary_metrics(y_true, proba, threshold).items()})
    out["test_recall"] = out["test_sensitivity"]
    out.update({f"test_{k}_at_0.5": v for k, v in binary_metrics(y_true, proba, 0.5).items()})
    return out


def confusion_figure(y_true: np.ndarray, proba: np.ndarray, threshold: float):
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    for ax, t in zip(axes, (threshold, 0.5)):
        cm = confusion_matrix(y_true, (proba >= t).astype(int), labels=[0, 1])
        ConfusionMatrixDisplay(cm, display_labels=CLASSES).plot(ax=ax, colorbar=False, cmap="Blues")
        ax.set_title(f"threshold {t:.3f}" + (" (chosen)" if t == threshold else ""))
    fig.tight_layout()
    return fig


def roc_figure(y_true: np.ndarray, proba: np.ndarray, threshold: float):
    fpr, tpr, thresholds = roc_curve(y_true, proba)
    at = binary_metrics(y_true, proba, threshold)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"ROC-AUC {roc_auc_score(y_true, proba):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    ax.scatter([1 - at["specificity"]], [at["sensitivity"]], color="red", zorder=3,
               label=f"threshold {threshold:.3f}")
    ax.set_xlabel("1 - specificity")
    ax.set_ylabel("sensitivity")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


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


def pr_figure(y_true: np.ndarray, proba: np.ndarray, threshold: float):
    precision, recall, _ = precision_recall_curve(y_true, proba)
    at = binary_metrics(y_true, proba, threshold)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(recall, precision, label=f"PR-AUC {average_precision_score(y_true, proba):.3f}")
    ax.axhline(float(np.mean(y_true)), linestyle="--", color="grey", linewidth=0.8, label="prevalence")
    ax.scatter([at["sensitivity"]], [at["precision"]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("sensitivity (recall)")
    ax.set_ylabel("precision")
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


# ---- which images: a labelled folder, or a data set's test split -------------------------------------------

def labelled_manifest(folder: Path) -> pd.DataFrame:
    """Rows (path, label, class_name, split='test', sha) of a folder with NORMAL/ and PNEUMONIA/,
    or of the test/ split of a data-set root; unusable files are skipped with a warning."""
    from .data import _child_dir, _content_hash, _file_problem

    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationError(f"--data-dir {folder} does not exist: give a folder with NORMAL/ and PNEUMONIA/ "
                              "(another site's films) or a data-set root with test/")
    root = folder if all(_child_dir(folder, c) for c in CLASSES) else _child_dir(folder, "test")
    if root is None or not all(_child_dir(root, c) for c in CLASSES):
        raise EvaluationError(f"{folder} has neither NORMAL/ and PNEUMONIA/ nor test/NORMAL/ and test/PNEUMONIA/")
    rows = []
    for label, cls in enumerate(CLASSES):
        for path in sorted(_child_dir(root, cls).iterdir()):
            if path.name.startswith(".") or not path.is_file():
                continue
            problem = _file_problem(path)
            if problem:
                log.warning("skipping %s: %s", path, problem)
                continue
            rows.append({"path": str(path), "label": label, "class_name": cls, "split": "test",
                         "sha": _content_hash(path)})
    manifest = pd.DataFrame(rows, columns=["path", "label", "class_name", "split", "sha"])
    if manifest["label"].nunique() < 2:
        raise EvaluationError(f"{root} has images of one class only: ROC-AUC needs NORMAL and PNEUMONIA images")
    return manifest


def test_fingerprint(manifest: pd.DataFrame) -> str:
    """The data fingerprint of the evaluated images alone (file contents and labels), so an evaluation by
    retrain-best and one by `make evaluate` of the same test/ folder carry the same fingerprint."""
    from .data import fingerprint

    return fingerprint(manifest.assign(split="test"))


# ---- the evaluate step ----------------------------------------------------------------------------------

@dataclass
class Evaluation:
    fingerprint: str
    report: dict[str, float]  # test_* names, as test_report gives them
    manifest: pd.DataFrame  # the images evaluated, in order, with `probability`
    run_id: str

    def summary(self) -> dict[str, float]:
        """The four figures promotion and the version tags use."""
        return {k: self.report[f"test_{k}"] for k in ("auc", "accuracy", "sensitivity", "specificity")}


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
    from .preprocess import ImageError
    from .serving import read_path

    grays, kept = [], []
    for i, path in enumerate(paths):
        try:
            grays.append(model.gray(read_path(path)))
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
    manifest = manifest.iloc[kept].reset_index(drop=True)
    if manifest.empty or manifest["label"].nunique() < 2:
        raise EvaluationError("fewer than two classes of readable images to evaluate on")
    labels = manifest["label"].to_numpy(dtype=np.int64)
    proba = model.probabilities(grays)
    threshold = model.threshold
    fp = test_fingerprint(manifest)
    from . import tracking

    tracking.log_dataset_input(manifest.drop(columns=["probability"], errors="ignore"),
                               os.path.commonpath(manifest["path"].tolist()), f"{dataset_name}-{fp}", "test")
    table = manifest.assign(probability=proba, prediction=(proba >= threshold).astype(int))
    with warnings.catch_warnings():
        # mlflow's classifier evaluator re-scores per-class slices and warns about one-class slices and
        # integer schemas; the report's own metrics (test_report, both classes checked above) are unaffected
        warnings.simplefilter("ignore", UserWarning)
        mlflow.models.evaluate(data=table[["label", "prediction", "probability"]], targets="label",
                               predictions="prediction", model_type="classifier", extra_metrics=_mlflow_metrics(),
                               evaluator_config={"log_model_explainability": False})
    report = test_report(labels, proba, threshold)
    mlflow.log_metrics({k.replace("@", "_"): v for k, v in report.items()})
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
    from . import tracking
    from .gradcam import gradcam, grid_figure
    from .preprocess import to_model_input

    idx = pick_gradcam_cases(labels, proba, threshold, count, seed)
    if not len(idx):
        return
    cams = gradcam(model.model, to_model_input(grays[idx]), model.gradcam_layer)
    tracking.log_figure(grid_figure(grays[idx], cams, labels[idx], proba[idx], threshold=threshold,
                                    title=f"Grad-CAM on test images (red: misclassified at {threshold:.3f})"),
                        artifact)


def log_lime_grid(model, grays: np.ndarray, labels: np.ndarray, proba: np.ndarray, threshold: float,
                  count: int, seed: int = 0, samples: int = LIME_SAMPLES) -> None:
    """LIME on the images the Grad-CAM grid shows (misclassified first), and how far the two agree:
    the nan-mean agreement becomes the run's metric `lime_gradcam_agreement`, so runs sort by it."""
    import mlflow

    from . import tracking
    from .explain import explain_test_images, misclassified_first

    idx = misclassified_first(pick_gradcam_cases(labels, proba, threshold, count, seed), labels, proba, threshold)
    if not len(idx):
        return
    print(f"LIME on {len(idx)} test images ({samples} samples each)", flush=True)
    fig, agreements = explain_test_images(model.model, model.gradcam_layer, grays, labels, proba, threshold, idx,
                                          samples=samples, seed=seed)
    tracking.log_figure(fig, "evaluation/lime_test.png")
    if np.isfinite(agreements).any():
        mlflow.log_metric("lime_gradcam_agreement", float(np.nanmean(agreements)))


def evaluate_version(version, manifest: pd.DataFrame, gradcam_images: int = 8, tags: dict | None = None,
                     dataset_name: str = "evaluation") -> Evaluation:
    """`make evaluate`: one MLflow run linked to the model version (tags, and the version's
    `eval.<fingerprint>.*` tags back to the run), in the experiment already set."""
    import mlflow

    from . import tracking
    from .registry import eval_tags, tag_version, version_uri
    from .serving import load

    uri = version_uri(version)
    model = load(uri)
    run_tags = {tracking.RUN_TYPE: "evaluate", "model_name": version.name, "model_version": str(version.version),
                "model_uri": uri, "model_run_id": version.run_id or "", **(tags or {})}
    with mlflow.start_run(run_name=f"evaluate-{version.name}-v{version.version}", tags=run_tags):
        mlflow.log_params({"model_uri": uri, "threshold": model.threshold, "image_size": model.preprocess_cfg.image_size})
        result = evaluate_model(model, manifest, gradcam_images=gradcam_images, dataset_name=dataset_name)
    tag_version(version.name, version.version, eval_tags(result.fingerprint, result.summary(), result.run_id,
                                                         len(result.manifest)))
    return result


def manifest_of_run(run_id: str) -> pd.DataFrame:
    """The images an evaluation run used (its predictions table), to evaluate another model on the same set."""
    import mlflow

    return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/predictions.csv"))


def still_on_disk(manifest: pd.DataFrame) -> bool:
    """Every file still there with the same content (else the fingerprint would not be the same set)."""
    from .data import _content_hash

    return all(Path(p).is_file() and _content_hash(Path(p)) == sha for p, sha in zip(manifest["path"], manifest["sha"]))


EVALUATE_EXPERIMENT = "pneumonia-evaluate"


def evaluate_like(version, reference, fingerprint: str, tags: dict | None = None):
    """Evaluate `version` on the images `reference` was evaluated on (fingerprint), if they are all still
    on disk unchanged; the re-read version (with its new eval tags), or None when that is impossible."""
    from mlflow import MlflowClient

    run_id = reference.tags.get(f"eval.{fingerprint}.run_id")
    if not run_id:
        return None
    manifest = manifest_of_run(run_id)
    if not {"path", "label", "sha"} <= set(manifest.columns) or not still_on_disk(manifest):
        return None
    columns = [c for c in ("path", "label", "class_name", "split", "sha") if c in manifest.columns]
    result = evaluate_version(version, manifest[columns], gradcam_images=0, tags=tags)
    if result.fingerprint != fingerprint:
        return None
    return MlflowClient().get_model_version(version.name, version.version)
