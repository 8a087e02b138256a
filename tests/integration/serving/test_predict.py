"""`predict`: files, folders and globs; one version; predictions.csv; overlays at the film's size;
the same probabilities as the registered pyfunc loaded by MLflow."""
from __future__ import annotations

import base64
import shutil

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.registry.promotion import CHAMPION, TEST_FINGERPRINT, register

pytestmark = pytest.mark.slow  # real Keras model from a real MLflow registry


@pytest.fixture
def champion(registry) -> str:
    """Its own model name with one champion version (the session's trained pyfunc)."""
    name = "t-predict"
    src = mlflow.MlflowClient().get_model_version("trained", "1")
    version = register(f"runs:/{src.run_id}/model", name, {TEST_FINGERPRINT: "x"}).version
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, version)
    return name


@pytest.fixture
def films(synthetic_dir, tmp_path):
    """Two files with the same name in different folders, a large 16-bit PNG, an RGBA PNG, a corrupt file."""
    normal, pneumonia = sorted((synthetic_dir / "test" / "NORMAL").iterdir()), sorted(
        (synthetic_dir / "test" / "PNEUMONIA").iterdir())
    site_a, site_b = tmp_path / "in" / "site_a", tmp_path / "in" / "site_b"
    site_a.mkdir(parents=True)
    site_b.mkdir()
    shutil.copy(normal[0], site_a / "film.jpeg")
    shutil.copy(pneumonia[0], site_b / "film.jpeg")
    gray = cv2.imread(str(pneumonia[1]), cv2.IMREAD_GRAYSCALE)
    big16 = cv2.resize(gray, (300, 240)).astype(np.uint16) * 16  # 12-bit values, not the model's size
    assert cv2.imwrite(str(site_b / "big16.png"), big16)
    assert cv2.imwrite(str(site_a / "rgba.png"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA))
    (tmp_path / "corrupt.jpeg").write_bytes(b"\xff\xd8\xff" + b"not a jpeg" * 10)
    return tmp_path


def test_predict_folders_and_globs_matches_the_pyfunc(champion, films, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["predict", "--model", f"models:/{champion}@champion", "--output", str(out),
                 str(films / "in" / "site_a"), str(films / "in" / "*" / "*.png"), str(films / "in" / "site_b"),
                 str(films / "corrupt.jpeg")])
    captured = capsys.readouterr()
    assert code == 1 and "corrupt.jpeg" in captured.err  # one file failed, the others still ran
    assert f"models:/{champion}/1 (resolved once)" in captured.out
    table = pd.read_csv(out / "predictions.csv")
    assert {"path", "probability", "label", "threshold", "model_version"} <= set(table.columns)
    ok = table.dropna(subset=["probability"])
    assert len(ok) == 4 and ok["path"].is_unique  # the glob's PNGs are not counted twice
    assert set(ok["model_version"].astype(str)) == {"1"}
    assert set(ok["label"]) <= {"NORMAL", "PNEUMONIA"}
    assert ((ok["probability"] >= ok["threshold"]) == (ok["label"] == "PNEUMONIA")).all()
    # overlays: unique names from the relative path, at the original resolution
    names = sorted(p.name for p in out.glob("*_gradcam.png"))
    assert names == ["in__site_a__film_gradcam.png", "in__site_a__rgba_gradcam.png",
                     "in__site_b__big16_gradcam.png", "in__site_b__film_gradcam.png"]  # relative to the inputs' common folder
    assert cv2.imread(str(out / "in__site_b__big16_gradcam.png")).shape == (240, 300, 3)

    # the registered model, loaded by MLflow from the alias, gives the same probabilities from file bytes
    model = mlflow.pyfunc.load_model(f"models:/{champion}@champion")
    frame = pd.DataFrame({"image": [base64.b64encode(open(p, "rb").read()).decode() for p in ok["path"]]})
    served = model.predict(frame)
    assert list(served.columns) == ["probability", "label", "threshold", "in_distribution", "ood_score"]
    np.testing.assert_allclose(served["probability"], ok["probability"], atol=1e-5)
    assert list(served["label"]) == list(ok["label"])
    by_path = model.predict(pd.DataFrame({"path": ok["path"].tolist()}))  # batch use: a `path` column
    np.testing.assert_allclose(by_path["probability"], ok["probability"], atol=1e-5)


def test_predict_with_a_missing_file_says_which(champion, tmp_path, capsys):
    code = main(["predict", "--model", f"models:/{champion}@champion", "--output", str(tmp_path / "o"),
                 str(tmp_path / "nothing-*.jpeg")])
    assert code == 1 and "nothing-*.jpeg" in capsys.readouterr().err


def test_predict_explain_both_writes_lime_beside_gradcam_with_agreement(champion, films, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["predict", "--model", f"models:/{champion}@champion", "--output", str(out), "--explain", "both",
                 "--lime-samples", "20", str(films / "in" / "site_b")]) == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "predictions.csv")
    assert len(table) == 2 and table["agreement"].between(0, 1).all()
    for row in table.itertuples():
        film = cv2.imread(row.path, cv2.IMREAD_UNCHANGED)
        lime = cv2.imread(row.lime_overlay)
        assert row.lime_overlay.endswith("_lime.png") and lime.shape[:2] == film.shape[:2]  # the film's resolution
        assert cv2.imread(row.overlay).shape[:2] == film.shape[:2]
        assert f"agreement (IoU) {row.agreement:.2f}" in printed


def test_predict_explain_lime_only_writes_no_gradcam_overlay(champion, films, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--model", f"models:/{champion}@champion", "--output", str(out), "--explain", "lime",
                 "--lime-samples", "20", str(films / "in" / "site_a" / "film.jpeg")]) == 0
    assert not list(out.glob("*_gradcam.png")) and len(list(out.glob("*_lime.png"))) == 1


def test_bad_explain_value_is_one_error_line_before_any_work(tmp_path, monkeypatch, capsys):
    """In a fresh folder, so that a store made before the check (mlruns/) would show."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    argv = ["predict", "--model", "models:/t-predict@champion", "--output", "o", "--explain", "heatmap", "film.jpeg"]
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --explain 'heatmap'") and "lime" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no mlruns/, no o/
    # the control: with a valid --explain the same command gets as far as the store, and mlruns/ appears
    argv[argv.index("heatmap")] = "gradcam"
    assert main(argv) != 0 and (tmp_path / "mlruns").is_dir()
