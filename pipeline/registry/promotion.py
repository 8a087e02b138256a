"""Register step and promotion: a version carries its evaluations per data fingerprint; `champion`
moves only when MLflow's model validation passes on the same test set, and every decision is recorded.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Callable

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from pipeline.config import PipelineError, PromoteConfig
from pipeline.infra import tracking
from pipeline.registry.decision import (
    Paired,
    PredictionsMissing,
    describe,
    floor_checks,
    floor_thresholds,
    paired_checks,
)

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous-champion"
EVAL_METRICS = ("auc", "accuracy", "sensitivity", "specificity")
TEST_FINGERPRINT = "test_fingerprint"  # the fingerprint of the test set the version was retrained for
PROMOTION_EXPERIMENT = "model-promotions"
KEPT_EXIT_CODE = 3  # `promote` exits 0 when it promoted, this when the champion stays


class RegistryError(PipelineError, RuntimeError):
    """The registry does not hold what the command needs (no such model, alias or evaluation)."""


@dataclass
class Decision:
    promoted: bool
    reason: str
    challenger: str | None = None
    champion: str | None = None
    fingerprint: str | None = None
    figures: dict[str, float] = field(default_factory=dict)
    run_id: str | None = None


# ---- register ----------------------------------------------------------------------------------------

def eval_tags(fingerprint: str, summary: dict[str, float], run_id: str, images: int) -> dict[str, str]:
    """`eval.<fingerprint>.<metric>` tags: one evaluation per data set, so promotion compares like with like;
    each figure's 95% interval, when the summary has it, as `eval.<fingerprint>.<metric>_ci_low/_ci_high`."""
    names = [f"{k}{end}" for k in EVAL_METRICS for end in ("", "_ci_low", "_ci_high") if f"{k}{end}" in summary]
    tags = {f"eval.{fingerprint}.{k}": f"{summary[k]:.6f}" for k in names}
    return {**tags, f"eval.{fingerprint}.run_id": run_id, f"eval.{fingerprint}.images": str(images)}


def register(model_uri: str, name: str, tags: dict[str, str]) -> ModelVersion:
    """New version of `name` from a logged model, its evaluation as tags, and the challenger alias."""
    version = mlflow.register_model(model_uri, name, tags={k: str(v) for k, v in tags.items()})
    MlflowClient().set_registered_model_alias(name, CHALLENGER, version.version)
    return version


def tag_version(name: str, version: str, tags: dict[str, str]) -> None:
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, str(value))


def evaluation_on(version: ModelVersion, fingerprint: str) -> dict[str, float] | None:
    """The version's recorded figures on that data fingerprint, or None if missing or not finite."""
    try:
        values = {k: float(version.tags[f"eval.{fingerprint}.{k}"]) for k in EVAL_METRICS}
    except (KeyError, ValueError):
        return None
    return values if all(math.isfinite(v) for v in values.values()) else None


def evaluated_fingerprints(version: ModelVersion) -> list[str]:
    return sorted({k.split(".")[1] for k in version.tags if k.startswith("eval.") and k.endswith(".auc")})


# ---- promote -----------------------------------------------------------------------------------------

def _alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


Compare = Callable[[ModelVersion, ModelVersion, str], Paired]


def promote(name: str, cfg: PromoteConfig,
            evaluate_champion: Callable[[ModelVersion, ModelVersion, str], ModelVersion | None] | None = None,
            compare: Compare | None = None) -> Decision:
    """Champion moves to the challenger only if both carry an evaluation on the challenger's test
    fingerprint, MLflow's validation of the floors passes and the paired test on the same films does.
    `evaluate_champion(champion, challenger, fingerprint)` may evaluate the champion on that test set
    first (it returns the re-read version, or None when it cannot); `compare(challenger, champion,
    fingerprint)` runs the paired test from both evaluations' per-film probabilities (it raises a
    PipelineError when it cannot). Both are injected so this layer needs no model and no statistics.
    The decision is recorded either way."""
    client = MlflowClient()
    challenger = _alias(client, name, CHALLENGER)
    if challenger is None:
        raise RegistryError(f"model '{name}' has no '{CHALLENGER}' version; run `make retrain-best` first")
    champion = _alias(client, name, CHAMPION)
    decision = _decide(client, name, cfg, challenger, champion, evaluate_champion, compare)
    record(name, cfg, decision)
    return decision


def _paired(champion, challenger, fp, evaluate_champion, compare, lines) -> tuple[Paired | None, str]:
    """The paired test, re-evaluating the champion once when its recorded evaluation has no usable
    per-film probabilities (an older version); (None, why) when there is no test to be had."""
    if compare is None:
        return None, "no paired test was given to compare the two versions film by film"
    try:
        return compare(challenger, champion, fp), ""
    except PredictionsMissing as err:
        if evaluate_champion is None or err.version != str(champion.version):
            return None, str(err)
        lines.append(f"  {err}: evaluating champion v{champion.version} on {fp} again")
    except PipelineError as err:
        return None, str(err)
    refreshed = evaluate_champion(champion, challenger, fp)
    if refreshed is None:
        return None, f"champion v{champion.version} could not be evaluated again on {fp}"
    try:
        return compare(challenger, refreshed, fp), ""
    except PipelineError as err:
        return None, str(err)


def _decide(client, name, cfg, challenger, champion, evaluate_champion, compare) -> Decision:
    cp_version = champion.version if champion else None

    def kept(lines: list[str], fp: str | None = None, figures: dict | None = None) -> Decision:
        keep = f"kept champion v{cp_version}" if champion else "no champion set"
        return Decision(False, "\n".join([*lines, f"refused: {keep}"]), challenger.version, cp_version, fp,
                        figures or {})

    if champion is not None and champion.version == challenger.version:
        return kept([f"v{challenger.version} is already champion"])
    fp = challenger.tags.get(TEST_FINGERPRINT)
    ch_eval = evaluation_on(challenger, fp) if fp else None
    if ch_eval is None:
        return kept([f"challenger v{challenger.version} has no complete evaluation on its test set "
                     f"({TEST_FINGERPRINT}={fp or 'missing'}); run `make evaluate MODEL=models:/{name}/"
                     f"{challenger.version} DATA_DIR=...` or retrain"])
    lines = [f"test set {fp}", describe("challenger", challenger, ch_eval)]
    figures = {f"challenger_{k}": v for k, v in ch_eval.items()}
    paired_ok, paired_lines = True, []
    if champion is not None:
        cp_eval = evaluation_on(champion, fp)
        if cp_eval is None and evaluate_champion is not None:
            lines.append(f"champion v{champion.version} has no evaluation on {fp}: evaluating it there first")
            refreshed = evaluate_champion(champion, challenger, fp)
            champion = refreshed or champion
            cp_eval = evaluation_on(refreshed, fp) if refreshed is not None else None
        if cp_eval is None:
            others = ", ".join(evaluated_fingerprints(champion)) or "none"
            return kept([*lines, f"champion v{champion.version} is evaluated on {others}, the challenger on {fp}: "
                         "not comparable (the challenger's test files are gone or changed); evaluate both on one "
                         f"set with `make evaluate MODEL=models:/{name}/N DATA_DIR=...`"], fp, figures)
        lines.append(describe("champion  ", champion, cp_eval))
        figures.update({f"champion_{k}": v for k, v in cp_eval.items()})
        paired, why = _paired(champion, challenger, fp, evaluate_champion, compare, lines)
        if paired is None:
            return kept([*lines, *floor_checks(cfg, ch_eval), f"  no paired test: {why}; evaluate both versions "
                         f"on one set with `make evaluate MODEL=models:/{name}/N DATA_DIR=...`"], fp, figures)
        figures.update(paired.figures())
        paired_lines, paired_ok = paired_checks(cfg, paired)
    lines.extend([*floor_checks(cfg, ch_eval), *paired_lines])
    from mlflow.models.evaluation import EvaluationResult
    from mlflow.models.evaluation.validation import ModelValidationFailedException

    try:
        mlflow.validate_evaluation_results(floor_thresholds(cfg), EvaluationResult(ch_eval, {}))
    except ModelValidationFailedException:
        return kept(lines, fp, figures)
    if not paired_ok:
        return kept(lines, fp, figures)
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        lines.append(f"v{champion.version} is now '{PREVIOUS}' (undo with `make rollback`)")
    client.set_registered_model_alias(name, CHAMPION, challenger.version)
    lines.append(f"promoted v{challenger.version} to '{CHAMPION}'")
    return Decision(True, "\n".join(lines), challenger.version, cp_version, fp, figures)


def record(name: str, cfg: PromoteConfig, decision: Decision) -> None:
    """One MLflow run per decision (criteria as params, figures as metrics, reason as text) and tags on
    both versions pointing at it, so the registry page shows why a version is, or is not, champion."""

    tracking.setup(PROMOTION_EXPERIMENT)
    outcome = "promoted" if decision.promoted else "kept"
    tags = {tracking.RUN_TYPE: "promotion", "model_name": name, "decision": outcome,
            "challenger_version": decision.challenger or "", "champion_version": decision.champion or "",
            "test_fingerprint": decision.fingerprint or ""}
    with mlflow.start_run(run_name=f"{outcome} {name} v{decision.challenger}", tags=tags) as run:
        mlflow.log_params({f"criteria.{k}": v for k, v in asdict(cfg).items()})
        if decision.figures:
            mlflow.log_metrics(decision.figures)
        mlflow.log_text(decision.reason + "\n", "decision.txt")
        mlflow.log_dict({"criteria": asdict(cfg), "decision": outcome, **asdict(decision)}, "decision.json")
    decision.run_id = run.info.run_id
    summary = json.dumps({"decision": outcome, "criteria": asdict(cfg), **decision.figures})
    for role, version in (("challenger", decision.challenger), ("champion", decision.champion)):
        if version:
            tag_version(name, version, {"promotion.decision": outcome, "promotion.role": role,
                                        "promotion.run_id": run.info.run_id, "promotion.figures": summary})


ROLLBACK_TAG = "rollback.last"  # "DEMOTED->RESTORED" versions of the latest rollback, on the registered model


def rollback(name: str) -> Decision:
    """Champion back to previous-champion; the demoted version becomes previous-champion and loses
    `challenger`, so the next `promote` cannot bring it straight back. Not a toggle: a second rollback
    would re-promote the version just rolled back with no criteria checked, so it is refused (exit 3)
    until a promotion has moved the champion again."""
    client = MlflowClient()
    previous = _alias(client, name, PREVIOUS)
    if previous is None:
        raise RegistryError(f"model '{name}' has no '{PREVIOUS}' version to roll back to")
    champion = _alias(client, name, CHAMPION)
    last = client.get_registered_model(name).tags.get(ROLLBACK_TAG)
    if champion is not None and last == f"{previous.version}->{champion.version}":
        return Decision(False, f"refused: v{previous.version} is '{PREVIOUS}' because it was just rolled back, and "
                        f"a second rollback would put it back as champion without checking any criteria; "
                        f"champion stays v{champion.version}. To bring v{previous.version} back, give it the "
                        f"'{CHALLENGER}' alias and run `make promote`", champion=champion.version)
    client.set_registered_model_alias(name, CHAMPION, previous.version)
    lines = [f"rolled back: '{CHAMPION}' is v{previous.version} again"]
    if champion is not None:
        client.set_registered_model_alias(name, PREVIOUS, champion.version)
        client.set_model_version_tag(name, champion.version, "rolled_back", "true")
        client.set_registered_model_tag(name, ROLLBACK_TAG, f"{champion.version}->{previous.version}")
        lines.append(f"v{champion.version} is now '{PREVIOUS}'")
        challenger = _alias(client, name, CHALLENGER)
        if challenger is not None and challenger.version == champion.version:
            client.delete_registered_model_alias(name, CHALLENGER)
            lines.append(f"'{CHALLENGER}' removed from v{champion.version}: `make promote` will not bring it back")
    return Decision(True, "\n".join(lines), champion=previous.version)


def resolve(uri: str) -> ModelVersion:
    """models:/NAME@alias or models:/NAME/VERSION -> the version, resolved once (its tags carry the lineage)."""
    match = re.fullmatch(r"models:/([^@/]+)(?:@([^/]+)|/(\d+))", uri)
    if not match:
        raise RegistryError(f"model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    name, alias, number = match.groups()
    client = MlflowClient()
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, number)
    except MlflowException as err:
        raise RegistryError(f"{uri}: not in the registry at {mlflow.get_tracking_uri()} ({err.message})") from err


def version_uri(version: ModelVersion) -> str:
    """The pinned URI of a resolved version: loading it cannot pick up a promotion made meanwhile."""
    return f"models:/{version.name}/{version.version}"
