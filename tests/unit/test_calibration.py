"""Calibration fit/apply, the ECE against a hand-worked example, and OOD thresholds by construction."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit
from sklearn.metrics import roc_auc_score

from pipeline.config import ConfigError, RetrainConfig
from pipeline.evaluate.calibration import calibration_report, expected_calibration_error, ood_tags
from pipeline.modeling.calibration import Calibration, CalibrationError, fit_calibration, fit_platt
from pipeline.modeling.ood import OodDetector, OodError, fit_detector, pixel_descriptor


def test_ece_hand_worked_example():
    # bins of width 1/15: 0.1 -> bin 1 (share 1/2 vs mean 0.1, weight 2/4), 0.9 -> bin 13 (1 vs 0.9, weight 2/4)
    y, p = np.array([0, 1, 1, 1]), np.array([0.1, 0.1, 0.9, 0.9])
    assert expected_calibration_error(y, p) == pytest.approx(0.5 * 0.4 + 0.5 * 0.1)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0  # p=1 lands in the last bin
    # 15 bins, not 10: 0.62 and 0.68 fall either side of 10/15 (with 10 bins they would share one), 0.61 and 0.65 not
    assert expected_calibration_error(np.array([0, 1]), np.array([0.62, 0.68])) == pytest.approx(
        0.5 * 0.62 + 0.5 * 0.32)
    assert expected_calibration_error(np.array([0, 1]), np.array([0.61, 0.65])) == pytest.approx(abs(0.5 - 0.63))


def _miscalibrated(n=4000, slope=0.4, intercept=0.8, seed=0):
    """Labels drawn from sigmoid(z); the "model" reports sigmoid((z - intercept) / slope): overconfident, shifted."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 2, n)
    y = (rng.random(n) < expit(z)).astype(int)
    return expit((z - intercept) / slope), y


def test_platt_recovers_the_true_map_and_keeps_the_ranking():
    raw, y = _miscalibrated()
    cal = fit_calibration(raw, y, "platt")
    assert cal.method == "platt"
    assert cal.params["slope"] == pytest.approx(0.4, abs=0.05) and cal.params["intercept"] == pytest.approx(0.8, abs=0.1)
    fixed = cal.apply(raw)
    assert roc_auc_score(y, fixed) == pytest.approx(roc_auc_score(y, raw))
    report = calibration_report(y, raw, fixed)
    assert report["test_ece"] < 0.03 < report["test_ece_uncalibrated"]
    assert report["test_brier"] < report["test_brier_uncalibrated"]


def test_temperature_recovers_t_and_round_trips_through_the_model_config():
    rng = np.random.default_rng(1)
    z = rng.normal(0, 2, 4000)
    y = (rng.random(4000) < expit(z)).astype(int)
    cal = fit_calibration(expit(z * 3.0), y, "temperature")
    assert cal.params["temperature"] == pytest.approx(3.0, rel=0.1)
    again = Calibration.from_config(cal.to_config())
    np.testing.assert_allclose(again.apply([0.2, 0.9]), cal.apply([0.2, 0.9]))
    assert not np.allclose(cal.apply([0.2, 0.9]), [0.2, 0.9])  # control: it does move them
    np.testing.assert_allclose(Calibration.from_config({}).apply([0.2, 0.9]), [0.2, 0.9])  # an old version


def test_platt_refuses_a_reversing_slope_and_bad_names_are_config_errors():
    raw, y = _miscalibrated()
    with pytest.raises(CalibrationError, match="slope"):
        fit_platt(raw, 1 - y)
    # after training nothing is lost: a reversed ranking falls back to temperature, one class to none
    assert fit_calibration(raw, 1 - y, "platt").method == "temperature"
    assert fit_calibration(raw, np.zeros_like(y), "platt") == Calibration()
    with pytest.raises(CalibrationError, match="--calibration 'isotonic'"):
        fit_calibration(raw, y, "isotonic")
    with pytest.raises(ConfigError, match="calibration"):
        RetrainConfig(calibration="isotonic")
    with pytest.raises(ConfigError, match="ood_detector"):
        RetrainConfig(ood_detector="magic")


def _films(n, seed):
    """Film-like 64 px views: a bright two-lobed body on a dark background, with noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    body = 60 + 120 * ((np.abs(xx - 32) > 6) & (np.abs(xx - 32) < 26) & (yy > 8) & (yy < 56))
    return np.clip(body[None] * rng.uniform(0.8, 1.2, (n, 1, 1)) + rng.normal(0, 12, (n, 64, 64)),
                   0, 255).astype(np.uint8)


@pytest.mark.parametrize("name", ["mahalanobis", "knn", "pixel", "combined"])
def test_detector_threshold_flags_five_percent_of_val_and_survives_saving(name, tmp_path):
    train, val = _films(300, 0), _films(400, 1)
    rng = np.random.default_rng(2)
    f_train, f_val = rng.normal(size=(300, 16)), rng.normal(size=(400, 16))
    det = fit_detector(name, f_train, train, f_val, val, flag_share=0.05)
    share = det.flags(det.score(f_val, val)).mean()
    assert 0.04 <= share <= 0.06
    det.save(tmp_path / "ood.npz")
    again = OodDetector.load(tmp_path / "ood.npz")
    assert again.name == name and again.threshold == det.threshold
    np.testing.assert_allclose(again.score(f_val[:5], val[:5]), det.score(f_val[:5], val[:5]), rtol=1e-3)


def test_pixel_detector_flags_blank_noise_and_inverted_but_not_new_films():
    det = fit_detector("pixel", None, _films(300, 0), None, _films(200, 1))
    rng = np.random.default_rng(3)
    odd = np.stack([np.zeros((64, 64), np.uint8), np.full((64, 64), 255, np.uint8),
                    rng.integers(0, 256, (64, 64)).astype(np.uint8), 255 - _films(1, 4)[0]])
    assert det.flags(det.score(None, odd)).all()
    assert det.flags(det.score(None, _films(200, 5))).mean() < 0.15  # control: new films of the same kind pass
    assert pixel_descriptor(odd).shape == (4, 64 + 16 + 3)
    with pytest.raises(OodError, match="ood-detector"):
        fit_detector("magic", None, _films(3, 0), None, _films(3, 1))


def test_ood_tags_only_with_a_detector():
    assert ood_tags("fp", {"test_ood_share": 0.25}) == {"eval.fp.ood_share": "0.250000"}
    assert ood_tags("fp", {"test_auc": 0.9}) == {}
