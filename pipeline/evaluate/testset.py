"""Which films an evaluation reads: a labelled folder or a data set's test split, and its fingerprint."""
from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from pipeline.config import PipelineError
from pipeline.data.dataset import CLASSES, _child_dir, _content_hash, _file_problem, fingerprint

log = logging.getLogger(__name__)


class EvaluationError(PipelineError, ValueError):
    """The folder to evaluate on cannot be used (no class folders, one class, no readable image)."""


def labelled_manifest(folder: Path) -> pd.DataFrame:
    """Rows (path, label, class_name, split='test', sha) of a folder with NORMAL/ and PNEUMONIA/,
    or of the test/ split of a data-set root; unusable files are skipped with a warning."""

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


def with_content_hash(manifest: pd.DataFrame) -> pd.DataFrame:
    """The manifest with each file's content hash (`sha`), the key two evaluations are matched on film by film."""
    if "sha" in manifest.columns:
        return manifest
    return manifest.assign(sha=[_content_hash(Path(p)) for p in manifest["path"]])


def test_fingerprint(manifest: pd.DataFrame) -> str:
    """The data fingerprint of the evaluated images alone (file contents and labels), so an evaluation by
    retrain-best and one by `make evaluate` of the same test/ folder carry the same fingerprint."""

    return fingerprint(manifest.assign(split="test"))


def manifest_of_run(run_id: str) -> pd.DataFrame:
    """The images an evaluation run used (its predictions table), to evaluate another model on the same set."""
    import mlflow

    return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="evaluation/predictions.csv"))


def still_on_disk(manifest: pd.DataFrame) -> bool:
    """Every file still there with the same content (else the fingerprint would not be the same set)."""

    return all(Path(p).is_file() and _content_hash(Path(p)) == sha for p, sha in zip(manifest["path"], manifest["sha"]))
