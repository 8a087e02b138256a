"""retrain-best -> register -> promote / rollback against a real SQLite-backed MLflow registry."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.config import PromoteConfig
from pipeline.evaluate.paired import compare_versions
from pipeline.registry.promotion import (
    CHALLENGER,
    CHAMPION,
    KEPT_EXIT_CODE,
    PREVIOUS,
    PROMOTION_EXPERIMENT,
    TEST_FINGERPRINT,
    eval_tags,
    promote,
    register,
)
from tests.helpers import RETRAIN_ARGV
from tests.integration.registry.films import constructed_version, films, scores

pytestmark = pytest.mark.slow  # real Keras training, MLflow registry
TRAINED = "trained"
OWN = "t-own-retrain"  # a second retrain of the session's search, registered under a name no other test touches


def alias(name: str, which: str) -> str | None:
    try:
        return MlflowClient().get_model_version_by_alias(name, which).version
    except mlflow.exceptions.MlflowException:
        return None


def source():
    return MlflowClient().get_model_version(TRAINED, "1")


@pytest.fixture(scope="module")
def own_version(trained_registry) -> str:
    """Version 1 of OWN, from its own retrain-best: other tests evaluate (and so re-tag) TRAINED v1, never this."""
    from pipeline.infra import tracking

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained_registry)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        tracking.connect()
        assert main([*RETRAIN_ARGV, "--model-name", OWN]) == 0
    return OWN


def new_version(name: str, auc: float, sensitivity: float = 0.97, fingerprint: str | None = None) -> str:
    """A real version of the trained pyfunc under `name`, with a recorded evaluation on `fingerprint`."""
    src = source()
    fp = fingerprint or src.tags[TEST_FINGERPRINT]
    tags = {TEST_FINGERPRINT: fp, **eval_tags(fp, {"auc": auc, "accuracy": 0.9, "sensitivity": sensitivity,
                                                   "specificity": 0.8}, "no-run", 12)}
    return register(f"runs:/{src.run_id}/model", name, tags).version


def test_retrain_registers_an_image_pyfunc_with_keras_model_evaluation_and_lineage(registry, own_version):
    client = MlflowClient()
    v = client.get_model_version_by_alias(own_version, CHALLENGER)
    fp = v.tags[TEST_FINGERPRINT]
    for metric in ("auc", "accuracy", "sensitivity", "specificity"):
        assert 0.0 <= float(v.tags[f"eval.{fp}.{metric}_ci_low"]) <= float(v.tags[f"eval.{fp}.{metric}"]) \
            <= float(v.tags[f"eval.{fp}.{metric}_ci_high"]) <= 1.0
    run = client.get_run(v.tags["retrain_run_id"])
    search = client.get_run(run.data.tags["search_run_id"])
    assert run.data.tags["best_trial"] == search.data.tags["best_trial"]
    assert run.data.tags["data_fingerprint"] == search.data.tags["data_fingerprint"]
    assert run.data.tags["test_fingerprint"] == fp
    # the version points at its evaluation on fp, the retrain run's own (nothing else evaluated this version)
    assert v.tags[f"eval.{fp}.run_id"] == run.info.run_id
    files = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {f"evaluation/{f}" for f in ("confusion_matrix.png", "roc_curve.png", "pr_curve.png", "gradcam_test.png",
                                        "predictions.csv")} <= files
    assert {"test_auc", "test_pr_auc", "test_specificity", "roc_auc", "pr_auc", "accuracy_score"} <= set(run.data.metrics)
    assert {f"test_{m}_ci_{e}" for m in ("auc", "accuracy", "sensitivity", "specificity", "precision", "npv")
            for e in ("low", "high")} <= set(run.data.metrics)
    contexts = {t.value for i in run.inputs.dataset_inputs for t in i.tags if t.key == "mlflow.data.context"}
    assert contexts == {"train", "val", "test"}  # lineage through mlflow.log_input
    mlmodel = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/model/MLmodel")).read_text()
    assert "python_function" in mlmodel and "signature" in mlmodel and "input_example" in mlmodel
    assert "image" in mlmodel and "probability" in mlmodel  # the signature: image file in, probability out
    assert "keras" in Path(mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/keras_model/MLmodel")).read_text()


def test_every_promotion_needs_the_auc_floor_and_sensitivity_and_margin(registry):
    name, cfg = "t-rules", PromoteConfig(min_auc=0.8, min_sensitivity=0.9, margin=0.01)
    labels, latent, shas = films(seed=10)
    fp = "a1a1a1a1a1a1a1a1"
    constructed_version(name, labels, 1 - scores(latent, 1.0, seed=11), shas, fp)  # inverted: worse than chance
    decision = promote(name, cfg, compare=compare_versions)  # not even the first version may become champion
    assert not decision.promoted and "min 0.8000: FAILED" in decision.reason and decision.figures["challenger_auc"] < 0.5
    assert alias(name, CHAMPION) is None

    champion = scores(latent, 0.8, seed=12)
    first = constructed_version(name, labels, champion, shas, fp)
    assert promote(name, cfg, compare=compare_versions).promoted and alias(name, CHAMPION) == first

    nudged = champion + np.where(np.arange(len(labels)) % 50 == 0, 0.2 * labels, 0)  # a few films better: a tiny gain
    constructed_version(name, labels, nudged, shas, fp)
    decision = promote(name, cfg, compare=compare_versions)
    assert 0 < decision.figures["paired_auc_difference"] < 0.01  # control: a gain, but under the margin
    assert not decision.promoted and "margin 0.0100: FAILED" in decision.reason and alias(name, CHAMPION) == first

    much_better = scores(latent, 0.2, seed=13)
    constructed_version(name, labels, much_better, shas, fp, sensitivity=0.8)  # misses too many pneumonias
    decision = promote(name, cfg, compare=compare_versions)
    assert not decision.promoted and "sensitivity 0.800 >= min 0.900: FAILED" in decision.reason
    assert decision.figures["paired_p_value"] < 0.001  # control: only the sensitivity floor refused it

    better = constructed_version(name, labels, much_better, shas, fp)
    decision = promote(name, cfg, compare=compare_versions)
    assert decision.promoted and alias(name, CHAMPION) == better and alias(name, PREVIOUS) == first
    # the decision is recorded: a run with the criteria, and tags on both versions pointing to it
    run = MlflowClient().get_run(decision.run_id)
    assert run.data.params["criteria.min_auc"] == "0.8" and run.data.tags["decision"] == "promoted"
    assert run.data.metrics["challenger_auc"] == pytest.approx(decision.figures["challenger_auc"])
    assert mlflow.get_experiment(run.info.experiment_id).name == PROMOTION_EXPERIMENT
    for v in (better, first):
        assert MlflowClient().get_model_version(name, v).tags["promotion.run_id"] == decision.run_id


def test_promotion_refuses_unlike_test_sets_and_names_both_fingerprints(registry):
    name, cfg = "t-fingerprints", PromoteConfig(min_auc=0.5, min_sensitivity=0.0)
    first = new_version(name, 0.90, fingerprint="aaaaaaaaaaaaaaaa")
    assert promote(name, cfg).promoted
    new_version(name, 0.99, fingerprint="bbbbbbbbbbbbbbbb")  # its evaluation run cannot be re-read: not comparable
    decision = promote(name, cfg)
    assert not decision.promoted and alias(name, CHAMPION) == first
    assert "aaaaaaaaaaaaaaaa" in decision.reason and "bbbbbbbbbbbbbbbb" in decision.reason


def test_champion_is_evaluated_on_the_challengers_test_set_first(registry, capsys):
    name = "t-reevaluate"
    first = new_version(name, 0.90, fingerprint="cccccccccccccccc")  # champion, known on another set only
    assert promote(name, PromoteConfig(min_auc=0.5, min_sensitivity=0.0)).promoted
    src = source()
    fp = src.tags[TEST_FINGERPRINT]
    challenger = register(f"runs:/{src.run_id}/model", name,
                          {k: v for k, v in src.tags.items() if k.startswith("eval.") or k == TEST_FINGERPRINT})
    code = main(["promote", "--model-name", name, "--min-auc", "0", "--min-sensitivity", "0", "--margin", "0.5"])
    out = capsys.readouterr().out
    assert "evaluating it there first" in out and "AUC difference +0.0000" in out  # same weights, same films
    champion = MlflowClient().get_model_version(name, first)
    assert float(champion.tags[f"eval.{fp}.auc"]) == pytest.approx(float(src.tags[f"eval.{fp}.auc"]), abs=1e-6)
    # same weights, so no gain of 0.5: kept, and the exit code says so
    assert code == KEPT_EXIT_CODE and alias(name, CHAMPION) == first and challenger.version != first


def test_promote_command_exit_codes_and_rollback_that_sticks(registry, capsys):
    name = "t-commands"
    labels, latent, shas = films(seed=20)
    first = constructed_version(name, labels, scores(latent, 1.0, seed=21), shas, "b2b2b2b2b2b2b2b2")
    assert main(["promote", "--model-name", name]) == 0
    assert f"promoted v{first} to 'champion'" in capsys.readouterr().out and alias(name, CHAMPION) == first
    assert main(["promote", "--model-name", name]) == KEPT_EXIT_CODE  # already champion: nothing changes
    assert "refused" in capsys.readouterr().out

    second = constructed_version(name, labels, scores(latent, 0.3, seed=22), shas, "b2b2b2b2b2b2b2b2")
    assert main(["promote", "--model-name", name]) == 0 and alias(name, CHAMPION) == second
    assert "paired DeLong on 624 films" in capsys.readouterr().out
    assert main(["promote", "--model-name", name, "--rollback"]) == 0
    assert alias(name, CHAMPION) == first and alias(name, PREVIOUS) == second
    assert alias(name, CHALLENGER) is None  # rollback took the alias off the rolled-back version ...
    assert main(["promote", "--model-name", name]) == 2  # ... so promote has nothing to bring back
    assert alias(name, CHAMPION) == first
    assert MlflowClient().get_model_version(name, second).tags["rolled_back"] == "true"


def test_promote_without_challenger_is_a_clear_error(registry, capsys):
    assert main(["promote", "--model-name", "no-such-model"]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_retrain_with_the_same_seed_gives_the_same_test_auc(registry, own_version):
    """Seeded shuffles, augmentation and initialisation plus TF op determinism: a second retrain of
    the same search, seed and data lands on the same test figures (the issue saw 0.44 vs 0.59)."""
    first, again = source(), MlflowClient().get_model_version(own_version, "1")
    assert first.run_id != again.run_id  # the control: two retrains, not one version read twice
    fp = first.tags[TEST_FINGERPRINT]
    assert again.tags[TEST_FINGERPRINT] == fp
    assert float(again.tags[f"eval.{fp}.auc"]) == pytest.approx(float(first.tags[f"eval.{fp}.auc"]), abs=0.005)
    assert again.tags["threshold"] == first.tags["threshold"]


def test_search_best_trial_is_the_trial_run_with_the_best_val_auc(registry, tmp_path):
    """best_trial.json and the parent's tags against what each trial's own child run recorded."""
    exp = mlflow.get_experiment_by_name("t-registry")
    parent = mlflow.search_runs([exp.experiment_id], filter_string="tags.`pipeline.run_type` = 'search'",
                                output_format="list")[0]
    trials = mlflow.search_runs([exp.experiment_id], output_format="list",
                                filter_string=f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' "
                                              "and tags.status = 'COMPLETE'")
    assert len(trials) >= 2  # the control: the search had a choice to make
    path = MlflowClient().download_artifacts(parent.info.run_id, "best_trial.json", str(tmp_path))
    best = json.loads(Path(path).read_text())
    [chosen] = [t for t in trials if t.info.run_id == best["run_id"]]
    assert chosen.data.metrics["val_auc"] == max(t.data.metrics["val_auc"] for t in trials)
    assert best["score"] == pytest.approx(chosen.data.metrics["val_auc"])
    assert str(best["number"]) == chosen.data.tags["trial_number"] == parent.data.tags["best_trial"]
    assert parent.data.tags["best_run_id"] == chosen.info.run_id
    for key, value in chosen.data.params.items():  # what the trial trained with, as the trial logged it
        assert best["params"][key] == pytest.approx(float(value)), key
        assert float(parent.data.tags[f"best.{key}"]) == pytest.approx(float(value)), key
