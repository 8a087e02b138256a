"""A real film and its DICOM twins get the same probability from a real registered model, through a path, base64
bytes (what the served model receives) and `predict` on a folder that holds extension-less DICOM files."""
from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import pytest

from pipeline.cli import main
from pipeline.data.preprocess import read_image, to_gray_uint8
from pipeline.serving.predict import overlay_names
from pipeline.serving.pyfunc import load
from tests.helpers import DICOM_TWINS, REPO, write_dicom

REAL_TRAIN = REPO.parent / "shared" / "data" / "chest_xray" / "train"
MODEL = "models:/trained/1"

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REAL_TRAIN.is_dir(), reason=f"real training films not found at {REAL_TRAIN}")]


@pytest.fixture
def twins(tmp_path):
    """{film path: [its DICOM twins]} for three NORMAL and three PNEUMONIA training films."""
    films = sorted((REAL_TRAIN / "NORMAL").glob("*.jpeg"))[:3] + sorted((REAL_TRAIN / "PNEUMONIA").glob("*.jpeg"))[:3]
    out = {}
    for i, film in enumerate(films):
        gray = to_gray_uint8(read_image(film))
        folder = tmp_path / f"film{i}"
        folder.mkdir()
        out[film] = [write_dicom(folder / f"{kind}.dcm", make(gray), **keywords)
                     for kind, (make, keywords) in sorted(DICOM_TWINS.items())]
    return out


def _predict(model, column: str, values: list) -> np.ndarray:
    return model.predict(None, pd.DataFrame({column: values}))["probability"].to_numpy()


def test_a_film_and_its_dicom_twins_get_the_same_probability(registry, twins):
    model = load(MODEL)
    films = list(twins)
    film_p = _predict(model, "path", [str(f) for f in films])
    assert np.ptp(film_p) > 1e-3  # the control: the model tells these films apart at this tolerance
    for film, p in zip(films, film_p):
        by_path = _predict(model, "path", [str(t) for t in twins[film]])
        by_bytes = _predict(model, "image", [base64.b64encode(t.read_bytes()).decode("ascii") for t in twins[film]])
        np.testing.assert_allclose(by_path, p, atol=1e-3, rtol=0)
        np.testing.assert_allclose(by_bytes, p, atol=1e-3, rtol=0)


def test_a_monochrome1_film_read_without_its_inversion_would_differ(registry, twins):
    """The control of the twin test: had MONOCHROME1 not been inverted, the probability would have moved."""
    model = load(MODEL)
    films = list(twins)
    inverted = [255 - to_gray_uint8(read_image(f)) for f in films]
    p_film = _predict(model, "path", [str(f) for f in films])
    p_inverted = model.probabilities(np.stack([model.gray(g) for g in inverted]))
    assert np.abs(p_film - p_inverted).max() > 1e-3


def test_predict_finds_extensionless_dicom_in_a_folder(registry, twins, tmp_path):
    film = next(iter(twins))
    folder = tmp_path / "archive"
    folder.mkdir()
    (folder / "film.jpeg").write_bytes(film.read_bytes())
    for i, twin in enumerate(twins[film][:2]):
        (folder / f"1.2.840.99.{i}").write_bytes(twin.read_bytes())  # archive-style names: no suffix, dotted
    (folder / "notes").write_text("not a film\n" * 20)
    out = tmp_path / "out"
    assert main(["predict", "--model", MODEL, "--output", str(out), str(folder)]) == 0
    table = pd.read_csv(out / "predictions.csv")
    names = table["path"].map(lambda p: p.rsplit("/", 1)[-1]).tolist()
    assert sorted(names) == ["1.2.840.99.0", "1.2.840.99.1", "film.jpeg"]  # the text file is not taken as a film
    np.testing.assert_allclose(table["probability"], table["probability"].iloc[0], atol=1e-3, rtol=0)
    overlays = sorted(p.name for p in out.glob("*_gradcam.png"))
    assert overlays == ["1.2.840.99.0_gradcam.png", "1.2.840.99.1_gradcam.png", "film_gradcam.png"]


def test_overlay_names_keep_dicom_names_apart(tmp_path):
    paths = [tmp_path / "a" / "1.2.840.5", tmp_path / "a" / "1.2.840.6", tmp_path / "b" / "film.jpeg"]
    assert overlay_names(paths) == ["a__1.2.840.5_gradcam.png", "a__1.2.840.6_gradcam.png", "b__film_gradcam.png"]
