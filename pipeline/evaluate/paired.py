"""Two versions' evaluations on one test set, film by film: the per-film probabilities each evaluation
logged (`evaluation/predictions.csv`, keyed by the file's content hash `sha`) joined for the paired test."""
from __future__ import annotations

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.evaluate.intervals import PairedAUC, paired_delong
from pipeline.evaluate.testset import EvaluationError, manifest_of_run
from pipeline.registry.decision import PredictionsMissing

PER_FILM = ("sha", "label", "probability")  # what a predictions.csv must hold for a paired comparison


def predictions_on(version, fingerprint: str) -> pd.DataFrame:
    """The version's per-film probabilities on that test fingerprint, one row per distinct film."""
    who = f"v{version.version}"
    run_id = version.tags.get(f"eval.{fingerprint}.run_id")
    if not run_id:
        raise PredictionsMissing(version.version, f"{who} has no evaluation run on {fingerprint}")
    try:
        run = MlflowClient().get_run(run_id)
        if run.data.tags.get("test_fingerprint") != fingerprint:
            raise PredictionsMissing(version.version,
                                     f"{who}'s evaluation run {run_id} is not on test set {fingerprint}")
        table = manifest_of_run(run_id)
    except (MlflowException, OSError) as err:
        raise PredictionsMissing(version.version, f"{who}'s evaluation run {run_id} has no readable "
                                 f"evaluation/predictions.csv ({type(err).__name__})") from err
    missing = [c for c in PER_FILM if c not in table.columns]
    if missing:
        raise PredictionsMissing(version.version, f"{who}'s evaluation run {run_id} has no per-film "
                                 f"{', '.join(missing)} (evaluated by an older version of the pipeline)")
    # byte-identical films are one film: the same model gives them the same probability
    return table[list(PER_FILM)].drop_duplicates("sha").set_index("sha")


def compare_versions(challenger, champion, fingerprint: str) -> PairedAUC:
    """Paired DeLong test of challenger against champion on the films both evaluations share, matched by
    content hash; every film must be in both, with the same label, or the two are not the same test."""
    ch, cp = predictions_on(challenger, fingerprint), predictions_on(champion, fingerprint)
    joined = ch.join(cp, how="inner", lsuffix="_challenger", rsuffix="_champion")
    if len(joined) != len(ch) or len(joined) != len(cp):
        raise EvaluationError(f"v{challenger.version} and v{champion.version} were evaluated on different films "
                              f"({len(ch)} and {len(cp)}, {len(joined)} in common)")
    if not (joined["label_challenger"] == joined["label_champion"]).all():
        raise EvaluationError(f"v{challenger.version} and v{champion.version} disagree on the labels of the "
                              "same films")
    return paired_delong(joined["label_challenger"].to_numpy(dtype=np.int64),
                         joined["probability_challenger"].to_numpy(dtype=float),
                         joined["probability_champion"].to_numpy(dtype=float))
