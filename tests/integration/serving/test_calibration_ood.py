"""Calibration and the out-of-distribution guard of a real registered version (the session's retrain-best):
fitted on val/train, served by the pyfunc, by `mlflow models serve`, written by predict and evaluate."""
from __future__ import annotations

import base64
import json
import math

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.config import DataConfig, PreprocessConfig, from_params
from pipeline.data.dataset import load_dataset
from pipeline.evaluate.metrics import choose_threshold
from pipeline.modeling.calibration import Calibration
from pipeline.registry.promotion import TEST_FINGERPRINT, register
from pipeline.modeling.ensemble import combine, view_probabilities
from pipeline.serving.pyfunc import load, read_path, save_pyfunc
from tests.helpers import mlflow_models_serve, post_json

pytestmark = pytest.mark.slow  # real Keras model from a real MLflow registry


def b64(path) -> str:
    return base64.b64encode(open(path, "rb").read()).decode("ascii")


@pytest.fixture
def odd_images(tmp_path):
    """A blank 64 px film, a 64 px noise image and a 32 px film-sized-down image (too small)."""
    rng = np.random.default_rng(0)
    files = {"blank": tmp_path / "blank.png", "noise": tmp_path / "noise.png", "tiny": tmp_path / "tiny.png"}
    assert cv2.imwrite(str(files["blank"]), np.zeros((64, 64), np.uint8))
    assert cv2.imwrite(str(files["noise"]), rng.integers(0, 256, (96, 96)).astype(np.uint8))
    assert cv2.imwrite(str(files["tiny"]), np.full((32, 32), 128, np.uint8))
    return files


@pytest.fixture
def val_split(registry):
    """The retrain run's own val split, rebuilt from the search's params (same seed, same patients)."""
    version = mlflow.MlflowClient().get_model_version("trained", "1")
    search = mlflow.get_run(mlflow.get_run(version.run_id).data.tags["search_run_id"])
    data_cfg = from_params(DataConfig, search.data.params)
    dataset = load_dataset(data_cfg, from_params(PreprocessConfig, search.data.params), progress=False)
    return dataset.split("val")


def test_version_serves_calibrated_probability_and_threshold_is_chosen_on_it(registry, val_split):
    version = mlflow.MlflowClient().get_model_version("trained", "1")
    tags = version.tags
    assert tags["calibration.method"] == "platt" and tags["ood.detector"] == "combined"
    params = json.loads(tags["calibration.params"])
    model = load("models:/trained/1")
    assert model.calibration == Calibration("platt", params)
    x_val, y_val = val_split
    out = model.outputs(x_val)
    # raw: the Keras network's own output, averaged over the test-time views validation chose for the version
    keras_raw = combine([view_probabilities(m, x_val) for m in model.members], model.tta)
    np.testing.assert_allclose(out.raw, keras_raw, atol=1e-5)
    np.testing.assert_allclose(out.probability, Calibration("platt", params).apply(keras_raw), atol=1e-5)
    moved = abs(params["slope"] - 1) > 0.05 or abs(params["intercept"]) > 0.05
    if moved:  # the fit says the probabilities move: the served ones differ from the raw ones
        assert np.abs(out.probability - out.raw).max() > 1e-3
    # the threshold is the rule applied to CALIBRATED val probabilities, not to the raw ones
    assert model.threshold == pytest.approx(choose_threshold(y_val, out.probability, "sensitivity", 0.95), abs=1e-6)
    if moved:
        assert model.threshold != pytest.approx(choose_threshold(y_val, out.raw, "sensitivity", 0.95), abs=1e-6)
    assert float(tags["threshold"]) == pytest.approx(model.threshold, abs=1e-5)
    # about 5% of val is flagged by construction (a quantile of val scores; one film either way on a small split)
    flagged = int((~out.in_distribution).sum())
    assert abs(flagged - 0.05 * len(x_val)) <= 1
    assert float(tags["ood.threshold"]) == pytest.approx(model.ood.threshold, rel=1e-5)


def test_retrain_report_has_brier_ece_reliability_and_ood_share(registry):
    version = mlflow.MlflowClient().get_model_version("trained", "1")
    run = mlflow.get_run(version.run_id)
    m = run.data.metrics
    for key in ("test_brier", "test_brier_uncalibrated", "test_ece", "test_ece_uncalibrated", "test_ood_share"):
        assert key in m and 0.0 <= m[key] <= 1.0
    assert m["test_brier"] != m["test_brier_uncalibrated"]  # control: the two really are different probabilities
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/reliability.png" in artifacts
    fp = version.tags[TEST_FINGERPRINT]
    assert float(version.tags[f"eval.{fp}.ood_share"]) == pytest.approx(m["test_ood_share"], abs=1e-6)
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                            artifact_path="evaluation/predictions.csv"))
    assert {"sha", "probability", "ood_score", "in_distribution"} <= set(table.columns)
    assert (~table["in_distribution"]).mean() == pytest.approx(m["test_ood_share"])


def test_blank_and_noise_are_flagged_and_a_32_px_image_gets_its_own_error(registry, synthetic_dir, odd_images,
                                                                          tmp_path, capsys):
    films = sorted((synthetic_dir / "test" / "NORMAL").iterdir())[:3]
    model = mlflow.pyfunc.load_model("models:/trained/1")
    served = model.predict(pd.DataFrame({"image": [b64(p) for p in [*films, odd_images["blank"],
                                                                        odd_images["noise"]]]}))
    assert list(served.columns) == ["probability", "label", "threshold", "in_distribution", "ood_score"]
    assert served["in_distribution"].dtype == bool and np.isfinite(served["ood_score"]).all()
    assert not served["in_distribution"].iloc[3] and not served["in_distribution"].iloc[4]  # blank, noise
    assert served["ood_score"].iloc[3:].min() > served["ood_score"].iloc[:3].max()  # control: films score lower

    out = tmp_path / "out"
    code = main(["predict", "--model", "models:/trained/1", "--output", str(out), str(films[0]),
                 str(odd_images["noise"]), str(odd_images["tiny"])])
    captured = capsys.readouterr()
    assert code == 1 and "tiny.png: 32x32 px is too small" in captured.err
    assert "noise.png\tp(pneumonia)=" in captured.out and "OUT OF DISTRIBUTION" in captured.out
    table = pd.read_csv(out / "predictions.csv").set_index("path")
    assert {"in_distribution", "ood_score"} <= set(table.columns)
    tiny = table.loc[str(odd_images["tiny"].resolve())]
    assert math.isnan(tiny["probability"]) and "at least 64 px" in tiny["error"]
    assert table.loc[str(odd_images["noise"].resolve()), "in_distribution"] == False  # noqa: E712 (read from csv)
    assert np.isfinite(table.loc[str(films[0].resolve()), "ood_score"])


def test_version_without_detector_or_calibration_still_predicts(registry, synthetic_dir, tmp_path):
    """A version saved before this existed: in_distribution true, ood_score NaN, probability the raw one."""
    model = load("models:/trained/1")
    keras_file = tmp_path / "classifier.keras"
    model.model.save(keras_file)
    save_pyfunc(tmp_path / "old", keras_file, model.preprocess_cfg, 0.5, model.gradcam_layer,
                pd.DataFrame({"image": [b64(sorted((synthetic_dir / "test" / "NORMAL").iterdir())[0])]}))
    old = mlflow.pyfunc.load_model(str(tmp_path / "old"))
    files = sorted((synthetic_dir / "test" / "PNEUMONIA").iterdir())[:2]
    got = old.predict(pd.DataFrame({"path": [str(p) for p in files]}))
    assert got["in_distribution"].all() and got["ood_score"].isna().all()
    grays = np.stack([model.gray(read_path(str(p))) for p in files])
    raw = model.model.predict(np.repeat(grays[..., None], 3, -1).astype(np.float32), verbose=0).reshape(-1)
    np.testing.assert_allclose(got["probability"], raw, atol=1e-5)  # the same weights, uncalibrated, no views
    assert not np.allclose(got["probability"], model.probabilities(np.stack([model.gray(read_path(str(p)))
                                                                              for p in files])), atol=1e-4) \
        or model.calibration.method == "none"  # control: the calibrated version does serve something else


def test_evaluate_reports_share_flagged_on_the_version(registry, synthetic_dir, capsys):
    name = "t-ood-eval"
    src = mlflow.MlflowClient().get_model_version("trained", "1")
    version = register(f"runs:/{src.run_id}/model", name, {TEST_FINGERPRINT: "x"}).version
    assert main(["evaluate", "--model", f"models:/{name}/{version}", "--data-dir", str(synthetic_dir),
                 "--gradcam-images", "0", "--experiment", "t-ood-eval"]) == 0
    assert "flagged out of distribution" in capsys.readouterr().out
    tags = mlflow.MlflowClient().get_model_version(name, version).tags
    shares = {k: v for k, v in tags.items() if k.endswith(".ood_share")}
    assert len(shares) == 1
    fp = next(iter(shares)).split(".")[1]
    run = mlflow.get_run(tags[f"eval.{fp}.run_id"])
    assert float(shares[f"eval.{fp}.ood_share"]) == pytest.approx(run.data.metrics["test_ood_share"], abs=1e-6)
    assert {"test_ece", "test_ece_uncalibrated", "test_brier", "test_brier_uncalibrated"} <= set(run.data.metrics)


def test_served_output_has_the_new_columns(registry, synthetic_dir, odd_images, tmp_path):
    film = sorted((synthetic_dir / "test" / "PNEUMONIA").iterdir())[0]
    encoded = [b64(film), b64(odd_images["blank"])]
    expected = mlflow.pyfunc.load_model("models:/trained/1").predict(pd.DataFrame({"image": encoded}))
    with mlflow_models_serve("models:/trained/1", f"sqlite:///{registry / 'mlruns' / 'mlflow.db'}", tmp_path) as port:
        answers = post_json(port, {"dataframe_split": {"columns": ["image"],
                                                       "data": [[e] for e in encoded]}})["predictions"]
    for answer, (_, row) in zip(answers, expected.iterrows()):
        assert answer["in_distribution"] is bool(row["in_distribution"])
        assert answer["ood_score"] == pytest.approx(row["ood_score"], rel=1e-5)
        assert answer["probability"] == pytest.approx(row["probability"], abs=1e-5)
    assert answers[1]["in_distribution"] is False  # the blank film, through HTTP
