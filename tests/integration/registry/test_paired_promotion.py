"""Promotion by the paired DeLong test on the same films, against a real SQLite MLflow registry."""
from __future__ import annotations

import mlflow
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.config import PromoteConfig
from pipeline.evaluate.paired import compare_versions
from pipeline.evaluate.step import evaluate_version
from pipeline.evaluate.testset import labelled_manifest
from pipeline.infra import tracking
from pipeline.registry.promotion import CHAMPION, KEPT_EXIT_CODE, TEST_FINGERPRINT, promote, register
from tests.integration.registry.films import constructed_version, films, scores

pytestmark = pytest.mark.slow  # real MLflow registry, real Keras model
FP = "f1f1f1f1f1f1f1f1"  # the constructed test set's fingerprint


def champion_of(name: str) -> str:
    return MlflowClient().get_model_version_by_alias(name, CHAMPION).version


def test_two_versions_with_the_same_weights_are_never_promoted(registry, synthetic_dir, capsys):
    """retrain-best's own evaluation against a fresh `evaluate` run of the same weights on the same films:
    even a zero margin and alpha 0.99 refuse."""
    name, src = "t-paired-same", MlflowClient().get_model_version("trained", "1")
    lineage = {k: v for k, v in src.tags.items() if k.startswith("eval.") or k == TEST_FINGERPRINT}
    first = register(f"runs:/{src.run_id}/model", name, lineage)
    assert promote(name, PromoteConfig(min_auc=0.0, min_sensitivity=0.0)).promoted  # the first: floors only
    second = register(f"runs:/{src.run_id}/model", name, {TEST_FINGERPRINT: src.tags[TEST_FINGERPRINT]})
    tracking.setup("t-paired-evaluate")
    again = evaluate_version(second, labelled_manifest(synthetic_dir / "test"), gradcam_images=0)
    assert again.fingerprint == src.tags[TEST_FINGERPRINT]  # the same films, evaluated twice
    table = again.manifest
    assert {"sha", "probability", "label"} <= set(table.columns) and table["sha"].is_unique  # keyed per film
    assert table["label"].nunique() == 2 and table["probability"].std() > 0  # control: a real, varying model

    code = main(["promote", "--model-name", name, "--min-auc", "0", "--min-sensitivity", "0", "--margin", "0",
                 "--alpha", "0.99"])
    out = capsys.readouterr().out
    assert code == KEPT_EXIT_CODE and champion_of(name) == first.version
    assert f"paired DeLong on {len(table)} films" in out and "AUC difference +0.0000" in out
    assert "one-sided p = 1" in out and "p 1 < alpha 0.99: FAILED" in out


def test_a_truly_better_version_on_624_films_is_promoted_with_the_test_recorded(registry):
    name, cfg = "t-paired-better", PromoteConfig(min_auc=0.8, min_sensitivity=0.9, margin=0.005, alpha=0.05)
    labels, latent, shas = films()
    first = constructed_version(name, labels, scores(latent, 1.0, seed=1), shas, FP)
    assert promote(name, cfg, compare=compare_versions).promoted
    better = constructed_version(name, labels, scores(latent, 0.3, seed=2), shas, FP)
    decision = promote(name, cfg, compare=compare_versions)
    assert decision.promoted and champion_of(name) == better, decision.reason
    f = decision.figures
    assert f["paired_auc_difference"] == pytest.approx(f["challenger_auc"] - f["champion_auc"], abs=1e-5)
    assert f["paired_auc_difference"] > 0.02 and f["paired_p_value"] < 0.001 and f["paired_films"] == 624
    assert 0 < f["paired_auc_difference_ci_low"] < f["paired_auc_difference"] < f["paired_auc_difference_ci_high"]
    run = MlflowClient().get_run(decision.run_id)  # the decision run holds the difference, its interval and p
    assert run.data.params["criteria.alpha"] == "0.05" and run.data.tags["decision"] == "promoted"
    for key in ("paired_auc_difference", "paired_auc_difference_ci_low", "paired_auc_difference_ci_high",
                "paired_p_value"):
        assert run.data.metrics[key] == pytest.approx(f[key])
    assert "one-sided p = " in mlflow.artifacts.load_text(f"runs:/{decision.run_id}/decision.txt")
    assert MlflowClient().get_model_version(name, first).tags["promotion.run_id"] == decision.run_id


def test_a_gain_of_about_0_01_on_600_films_is_refused_as_not_significant(registry):
    name, cfg = "t-paired-noise", PromoteConfig(min_auc=0.8, min_sensitivity=0.9, margin=0.005, alpha=0.05)
    labels, latent, shas = films(normal=230, pneumonia=370, seed=3)
    first = constructed_version(name, labels, scores(latent, 1.0, seed=4), shas, FP)
    assert promote(name, cfg, compare=compare_versions).promoted
    constructed_version(name, labels, scores(latent, 0.85, seed=6), shas, FP)  # a little less noise
    decision = promote(name, cfg, compare=compare_versions)
    f = decision.figures
    # control: a real gain of about 0.01 that clears the margin and the floors, so only p can refuse it
    assert 0.007 <= f["paired_auc_difference"] <= 0.015 and f["paired_films"] == 600
    assert f["challenger_auc"] >= cfg.min_auc and f"margin {cfg.margin:.4f}: ok" in decision.reason
    assert f["paired_p_value"] >= cfg.alpha and f["paired_auc_difference_ci_low"] < 0
    assert not decision.promoted and champion_of(name) == first
    assert "not significant" in decision.reason and "kept champion" in decision.reason


def test_films_that_do_not_match_are_not_compared(registry):
    name, cfg = "t-paired-mismatch", PromoteConfig(min_auc=0.5, min_sensitivity=0.0, margin=0.0, alpha=0.5)
    labels, latent, shas = films(normal=100, pneumonia=100, seed=6)
    constructed_version(name, labels, scores(latent, 1.0, seed=7), shas, FP)
    assert promote(name, cfg, compare=compare_versions).promoted
    other = [s[::-1] for s in shas[:10]] + shas[10:]  # ten films replaced: not the same test set
    constructed_version(name, labels, scores(latent, 0.2, seed=8), other, FP)
    decision = promote(name, cfg, compare=compare_versions)
    assert not decision.promoted and "different films" in decision.reason and "190 in common" in decision.reason
