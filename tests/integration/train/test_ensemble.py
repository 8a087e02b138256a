"""retrain-best --top-k / --seeds: several real Keras classifiers registered as ONE version whose served
probability is their mean over the views validation chose; evaluate, predict and promotion take it like any."""
from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from pipeline.cli import main
from pipeline.data.preprocess import to_model_input
from pipeline.explain.gradcam import gradcam
from pipeline.infra.tracking import RUN_TYPE
from pipeline.modeling.ensemble import TTA, view
from pipeline.registry.model_card import model_card
from pipeline.registry.promotion import CHALLENGER
from pipeline.serving.pyfunc import load
from tests.helpers import RETRAIN_ARGV, runs_of

pytestmark = pytest.mark.slow  # real Keras training, MLflow registry
NAME = "t-ensemble"
FAST = ["--fine-tune-epochs", "0", "--sanity-images", "0", "--gradcam-images", "2"]


@pytest.fixture(scope="module")
def ensemble(trained_registry):
    """Version 1 of NAME: the session search's two trials, mirrored films as the test-time view."""
    from pipeline.infra import tracking

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained_registry)
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        mp.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        tracking.connect()
        assert main([*RETRAIN_ARGV, *FAST, "--top-k", "2", "--tta", "flip", "--model-name", NAME]) == 0
    return NAME


def test_top_k_registers_the_two_best_trials_as_one_version(registry, ensemble):
    client = MlflowClient()
    version = client.get_model_version_by_alias(ensemble, CHALLENGER)
    assert version.tags["ensemble.members"] == "2" and version.tags["ensemble.tta"] == "flip"
    members = json.loads(version.tags["ensemble.list"])
    run = client.get_run(version.tags["retrain_run_id"])
    search = client.get_run(run.data.tags["search_run_id"])
    trials = [r for r in mlflow.search_runs([search.info.experiment_id], output_format="list",
                                            filter_string=f"tags.study_name = '{search.data.tags['study_name']}' "
                                                          f"and tags.status = 'COMPLETE' and tags.`{RUN_TYPE}` = 'trial'")]
    ranked = sorted(trials, key=lambda r: -r.data.metrics["val_auc"])
    assert [m["trial"] for m in members] == [r.data.tags["trial_number"] for r in ranked[:2]]
    assert members[0]["trial"] == search.data.tags["best_trial"]  # best first
    assert members[0]["params"]["dense_units"] == int(search.data.tags["best.dense_units"])
    assert run.info.run_name == f"retrain-ensemble-2-trials-{members[0]['trial']}-{members[1]['trial']}"
    assert int(run.data.params["dense_units"]) == members[0]["params"]["dense_units"]  # member 0's head
    # the validation table of members and views is in the run
    assert {"val_auc_tta_none", "val_auc_tta_flip", "val_auc_tta_flip_crops", "val_auc_ensemble"} \
        <= set(run.data.metrics)
    assert len(client.get_metric_history(run.info.run_id, "val_auc_first_members")) == 2
    card = model_card(ensemble, version.version)  # the card says what is averaged and how to rebuild it
    assert "the mean of 2 network(s)" in card and f"trial {members[1]['trial']} seed 43" in card
    assert "`flip`" in card and "--top-k 2" in card and "--tta flip" in card


def test_the_served_probability_is_the_calibrated_mean_of_members_and_views(registry, ensemble, synthetic_dir):
    model = load(f"models:/{ensemble}@{CHALLENGER}")
    assert len(model.members) == 2 and model.tta == "flip"
    films = sorted((synthetic_dir / "test").rglob("*.png"))[:6]
    served = mlflow.pyfunc.load_model(f"models:/{ensemble}@{CHALLENGER}").predict(
        pd.DataFrame({"path": [str(f) for f in films]}))
    grays = np.stack([model.gray(model.raw_image(pd.Series({"path": str(f)}), i)) for i, f in enumerate(films)])
    pixels = to_model_input(grays)
    by_hand = np.mean([m.predict(view(pixels, v), verbose=0).reshape(-1) for m in model.members for v in TTA["flip"]],
                      axis=0)
    np.testing.assert_allclose(served["probability"], model.calibration.apply(by_hand), atol=1e-5)
    alone = model.calibration.apply(model.members[0].predict(pixels, verbose=0).reshape(-1))
    assert not np.allclose(served["probability"], alone, atol=1e-4)  # control: member 0 alone answers otherwise
    # Grad-CAM of an ensemble: the mean of its members' maps
    cams = model.gradcam(pixels[:2])
    each = [gradcam(m, pixels[:2], model.gradcam_layer) for m in model.members]
    np.testing.assert_allclose(cams, np.mean(each, axis=0), atol=1e-5)


def test_lime_explains_what_the_version_serves_not_member_0(registry, ensemble, synthetic_dir):
    from pipeline.explain.lime import explain_lime

    model = load(f"models:/{ensemble}@{CHALLENGER}")
    film = model.gray(model.raw_image(pd.Series({"path": str(sorted((synthetic_dir / "test").rglob("*.png"))[0])}), 0))
    lime = explain_lime(model, film, samples=20, seed=0, n_segments=12)
    assert lime.probability == pytest.approx(float(model.probabilities(film[None])[0]), abs=1e-5)
    alone = model.calibration.apply(model.members[0].predict(to_model_input(film[None]), verbose=0).reshape(-1))
    assert lime.probability != pytest.approx(float(alone[0]), abs=1e-4)  # control: what it explained before


def test_evaluate_and_predict_take_an_ensemble_version_like_any(registry, ensemble, synthetic_dir, tmp_path, capsys):
    assert main(["evaluate", "--model", f"models:/{ensemble}/1", "--data-dir", str(synthetic_dir),
                 "--gradcam-images", "2"]) == 0
    out = capsys.readouterr().out
    assert "[95% CI]" in out and "tagged v1 eval." in out
    films = sorted((synthetic_dir / "test").rglob("*.png"))[:3]
    assert main(["predict", "--model", f"models:/{ensemble}/1", "--output", str(tmp_path / "out"),
                 *map(str, films)]) == 0
    table = pd.read_csv(tmp_path / "out" / "predictions.csv")
    served = mlflow.pyfunc.load_model(f"models:/{ensemble}/1").predict(pd.DataFrame({"path": [str(f) for f in films]}))
    np.testing.assert_allclose(table["probability"], served["probability"], atol=1e-5)
    assert len(list((tmp_path / "out").glob("*_gradcam.png"))) == len(films) == len(table)


def test_top_k_above_the_finished_trials_is_one_error_line_and_registers_nothing(registry, ensemble, capsys):
    before = len(MlflowClient().search_model_versions(f"name = '{ensemble}'"))
    runs_before = len(runs_of("t-registry"))
    capsys.readouterr()
    assert main([*RETRAIN_ARGV, *FAST, "--top-k", "5", "--model-name", ensemble]) == 2
    out, err = capsys.readouterr()
    assert "retraining" not in out and "decode" not in out + err  # refused before a film was decoded
    assert err.startswith("error: --top-k 5: the search's study") and "only 2 finished trial(s)" in err
    assert "Traceback" not in err
    assert len(MlflowClient().search_model_versions(f"name = '{ensemble}'")) == before
    assert len(runs_of("t-registry")) == runs_before  # refused before any run started
