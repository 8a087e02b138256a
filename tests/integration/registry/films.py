"""Evaluation runs whose predictions.csv holds constructed per-film probabilities, registered against real
versions of the session's trained pyfunc: what promotion decides from, with the scores under control."""
from __future__ import annotations

import hashlib

import mlflow
import numpy as np
import pandas as pd
from mlflow import MlflowClient

from pipeline.evaluate.metrics import test_report as report_of
from pipeline.infra import tracking
from pipeline.registry.promotion import TEST_FINGERPRINT, eval_tags, register

EXPERIMENT = "t-constructed-evaluations"


def films(normal: int = 234, pneumonia: int = 390, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels, a latent 'how pneumonic it looks' per film (shared by every model scored on it, so two models'
    scores correlate as real ones do) and a content hash per film (the official test split's counts)."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(normal), np.ones(pneumonia)].astype(int)
    latent = labels * 2.0 + rng.normal(0, 1, len(labels))
    shas = [hashlib.sha256(f"film-{seed}-{i}".encode()).hexdigest()[:16] for i in range(len(labels))]
    return labels, latent, shas


def scores(latent: np.ndarray, noise: float, seed: int) -> np.ndarray:
    """A model's probabilities: the shared latent plus the model's own noise, squashed to (0, 1)."""
    z = latent + np.random.default_rng(seed).normal(0, noise, len(latent))
    return 1 / (1 + np.exp(-(z - 1.0)))


def sensitivity_threshold(labels: np.ndarray, proba: np.ndarray, sensitivity: float = 0.95) -> float:
    """The threshold at which exactly round(sensitivity * positives) pneumonia films are called."""
    positives = np.sort(proba[labels == 1])
    return float(positives[len(positives) - int(round(sensitivity * len(positives)))])


def constructed_evaluation(labels: np.ndarray, proba: np.ndarray, shas: list[str], fingerprint: str,
                           sensitivity: float = 0.95) -> dict[str, str]:
    """A logged evaluation run (tags and predictions.csv as evaluate_model writes them) on `fingerprint`;
    the version tags that name it as a version's test evaluation."""
    threshold = sensitivity_threshold(labels, proba, sensitivity)
    report = report_of(labels, proba, threshold)
    tracking.setup(EXPERIMENT)
    with mlflow.start_run(tags={tracking.RUN_TYPE: "evaluate", "test_fingerprint": fingerprint}) as run:
        mlflow.log_metrics(report)
        table = pd.DataFrame({"path": [f"/gone/{s}.jpeg" for s in shas], "label": labels, "sha": shas,
                              "probability": proba, "prediction": (proba >= threshold).astype(int)})
        mlflow.log_text(table.to_csv(index=False), "evaluation/predictions.csv")
    summary = {k[5:]: v for k, v in report.items() if k.startswith("test_")}
    return {TEST_FINGERPRINT: fingerprint, **eval_tags(fingerprint, summary, run.info.run_id, len(labels))}


def constructed_version(name: str, labels: np.ndarray, proba: np.ndarray, shas: list[str], fingerprint: str,
                        sensitivity: float = 0.95) -> str:
    """A constructed evaluation registered as the test evaluation of a new version of the trained pyfunc."""
    tags = constructed_evaluation(labels, proba, shas, fingerprint, sensitivity)
    source = MlflowClient().get_model_version("trained", "1")
    return register(f"runs:/{source.run_id}/model", name, tags).version
