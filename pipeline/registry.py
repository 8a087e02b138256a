"""Model Registry: register a retrained model as challenger, promote it to champion only when better."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from .config import PipelineError, PromoteConfig

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
EVALUATION_TAGS = ("test_auc", "test_accuracy", "test_sensitivity", "test_specificity", "threshold")


class RegistryError(PipelineError, RuntimeError):
    """The registry does not hold what the command needs (no such model, alias or evaluation)."""


@dataclass
class Decision:
    promoted: bool
    reason: str
    challenger: str | None = None
    champion: str | None = None


def register(model_uri: str, name: str, tags: dict[str, str]) -> ModelVersion:
    """New version of `name` from a logged model, its evaluation as tags, and the challenger alias."""
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    MlflowClient().set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _evaluation(version: ModelVersion) -> dict[str, float] | None:
    """Recorded test metrics, or None when the evaluation is missing, failed or not finite."""
    try:
        values = {k: float(version.tags[k]) for k in EVALUATION_TAGS}
    except (KeyError, ValueError):
        return None
    if version.tags.get("evaluation") != "complete" or not all(math.isfinite(v) for v in values.values()):
        return None
    return values


def _describe(label: str, version: ModelVersion, ev: dict) -> str:
    return (f"{label} v{version.version}: AUC {ev['test_auc']:.4f}, sensitivity {ev['test_sensitivity']:.3f}, "
            f"specificity {ev['test_specificity']:.3f}, accuracy {ev['test_accuracy']:.3f}")


def promote(name: str, cfg: PromoteConfig) -> Decision:
    """Champion moves to the challenger only if its evaluation is complete, sensitive enough and
    better by cfg.margin in test ROC-AUC; the replaced champion stays reachable as previous-champion."""
    client = MlflowClient()
    challenger = _alias(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"model '{name}' has no '{CHALLENGER}' version; run `make retrain-best` first")
    champion = _alias(client, name, CHAMPION)
    ch_eval = _evaluation(challenger)
    if ch_eval is None:
        return Decision(False, f"challenger v{challenger.version} has no complete evaluation "
                               f"({', '.join(EVALUATION_TAGS)}); nothing promoted", challenger.version,
                        champion.version if champion else None)
    lines = [_describe("challenger", challenger, ch_eval)]
    if champion is not None and champion.version == challenger.version:
        return Decision(False, f"v{challenger.version} is already champion", challenger.version, champion.version)
    if ch_eval["test_sensitivity"] < cfg.min_sensitivity:
        lines.append(f"refused: sensitivity {ch_eval['test_sensitivity']:.3f} < required {cfg.min_sensitivity:.3f}")
        return Decision(False, "\n".join(lines), challenger.version, champion.version if champion else None)
    cp_eval = _evaluation(champion) if champion is not None else None
    if champion is not None and cp_eval is not None:
        lines.append(_describe("champion  ", champion, cp_eval))
        gain = ch_eval["test_auc"] - cp_eval["test_auc"]
        if gain < cfg.margin:
            lines.append(f"kept champion v{champion.version}: AUC gain {gain:+.4f} is below the margin {cfg.margin:.4f}")
            return Decision(False, "\n".join(lines), challenger.version, champion.version)
        lines.append(f"AUC gain {gain:+.4f} >= margin {cfg.margin:.4f}")
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        lines.append(f"v{champion.version} is now '{PREVIOUS}' (undo with `make rollback`)")
    else:
        lines.append("no champion yet: the first evaluated version becomes champion")
    client.set_registered_model_alias(name, CHAMPION, challenger.version)
    client.set_model_version_tag(name, challenger.version, "promoted_over",
                                 champion.version if champion is not None else "none")
    lines.append(f"promoted v{challenger.version} to '{CHAMPION}'")
    return Decision(True, "\n".join(lines), challenger.version, champion.version if champion else None)


def rollback(name: str) -> Decision:
    """Champion back to previous-champion; the demoted version becomes previous-champion (so undoable)."""
    client = MlflowClient()
    previous = _alias(client, name, PREVIOUS)
    if previous is None:
        raise RegistryError(f"model '{name}' has no '{PREVIOUS}' version to roll back to")
    champion = _alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
    return Decision(True, f"rolled back: '{CHAMPION}' is v{previous.version} again"
                          + (f", v{champion.version} is now '{PREVIOUS}'" if champion else ""),
                    champion=previous.version)


def resolve(uri: str) -> ModelVersion:
    """models:/NAME@alias or models:/NAME/VERSION -> the version (its tags carry threshold and preprocessing)."""
    match = re.fullmatch(r"models:/([^@/]+)(?:@([^/]+)|/(\d+))", uri)
    if not match:
        raise RegistryError(f"model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, number = match.groups()
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as err:
        raise RegistryError(f"{uri}: not in the registry at {mlflow.get_tracking_uri()} ({err.message})") from err
