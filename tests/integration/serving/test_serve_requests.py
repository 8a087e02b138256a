"""The pyfunc's request handling with a real (tiny) Keras model: row errors, paths over HTTP only inside the
operator's folder, base64 with line breaks. "Over HTTP" is the flag MLflow's scoring server itself sets
(_MLFLOW_IS_IN_SERVING_ENVIRONMENT); test_serve_fuzz.py drives the real server."""
from __future__ import annotations

import base64
import math
import os

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.config import PreprocessConfig
from pipeline.data.preprocess import ImageError
from pipeline.serving import requests
from pipeline.serving.pyfunc import PneumoniaModel

SERVING = "_MLFLOW_IS_IN_SERVING_ENVIRONMENT"


@pytest.fixture(scope="module")
def model():
    import keras

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")])
    m = PneumoniaModel()
    m.model, m.preprocess_cfg, m.threshold, m.gradcam_layer = net, PreprocessConfig(image_size=32), 0.5, None
    return m


@pytest.fixture
def film(synthetic_dir):
    return sorted((synthetic_dir / "test" / "PNEUMONIA").iterdir())[0]


def b64(path, wrap: bool = False) -> str:
    text = base64.b64encode(path.read_bytes()).decode("ascii")
    return "\n".join(text[i:i + 76] for i in range(0, len(text), 76)) + "\n" if wrap else text


def test_base64_with_line_breaks_as_the_base64_tool_prints_it(model, film):
    one_line, wrapped = b64(film), b64(film, wrap=True)
    assert "\n" in wrapped  # control: the film is long enough to be wrapped
    out = model.predict(None, pd.DataFrame({"image": [one_line, wrapped]}))
    assert "error" not in out.columns
    assert out["probability"][0] == pytest.approx(out["probability"][1], abs=1e-7)
    with pytest.raises(ImageError, match="not base64"):
        requests.base64_bytes("abc$%^", "row 0")  # line breaks are forgiven, other characters are not


def test_one_bad_row_gets_its_error_and_the_others_are_answered(model, film):
    good = b64(film)
    frame = pd.DataFrame({"image": [good, "not*base64", base64.b64encode(b"plain text").decode(), good]})
    out = model.predict(None, frame)
    assert len(out) == 4 and list(out["error"].isna()) == [True, False, False, True]
    assert "row 1" in out["error"][1] and "not base64" in out["error"][1]
    assert "row 2" in out["error"][2] and "cannot be decoded" in out["error"][2]
    assert math.isnan(out["probability"][1]) and math.isnan(out["probability"][2])
    alone = model.predict(None, pd.DataFrame({"image": [good]}))["probability"][0]
    assert out["probability"][0] == pytest.approx(alone, abs=1e-7) == out["probability"][3]
    assert list(out["label"][[0, 3]]) == [alone >= 0.5 and "PNEUMONIA" or "NORMAL"] * 2


def test_no_readable_row_is_one_request_error_with_a_line_per_row(model):
    with pytest.raises(requests.RequestError) as caught:
        model.predict(None, pd.DataFrame({"image": ["", "@@@"]}))
    err = caught.value
    assert err.get_http_status_code() == 400 and err.message.splitlines() == err.reasons and len(err.reasons) == 2
    assert "Traceback" not in err.serialize_as_json()
    with pytest.raises(requests.RequestError, match="expected 'image'"):
        model.predict(None, pd.DataFrame({"file": ["x"]}))


def test_in_process_callers_still_read_paths(model, film, monkeypatch):
    monkeypatch.delenv(SERVING, raising=False)
    out = model.predict(None, pd.DataFrame({"path": [str(film)]}))
    assert "error" not in out.columns and 0 <= out["probability"][0] <= 1


def test_over_http_a_path_is_refused_without_an_opt_in_folder(model, film, monkeypatch):
    monkeypatch.setenv(SERVING, "true")
    with pytest.raises(requests.RequestError, match="'path' is not accepted over HTTP") as caught:
        model.predict(None, pd.DataFrame({"path": [str(film)]}))
    assert str(film) not in caught.value.message  # the server's disk is not described back
    monkeypatch.delenv(SERVING)
    assert "error" not in model.predict(None, pd.DataFrame({"path": [str(film)]})).columns  # control


def test_over_http_paths_inside_the_folder_only_after_resolving_symlinks(model, film, tmp_path, monkeypatch):
    root, outside = tmp_path / "films", tmp_path / "secret"
    root.mkdir()
    outside.mkdir()
    (root / "a.jpeg").write_bytes(film.read_bytes())
    (outside / "b.jpeg").write_bytes(film.read_bytes())
    os.symlink(outside / "b.jpeg", root / "link.jpeg")  # inside by name, outside in fact
    monkeypatch.setenv(requests.PATH_ROOT_ENV, str(root))
    monkeypatch.setenv(SERVING, "true")
    served = PneumoniaModel()
    served.__dict__.update(model.__dict__, path_root=requests.path_root())
    asked = ["a.jpeg", str(root / "a.jpeg"), "link.jpeg", "../secret/b.jpeg", str(outside / "b.jpeg"),
             "missing.jpeg", "/etc/passwd"]
    out = served.predict(None, pd.DataFrame({"path": asked}))
    errors = list(out["error"])
    assert errors[0] is None and errors[1] is None
    assert out["probability"][0] is not None and out["probability"][0] == out["probability"][1]
    for i in (2, 3, 4, 6):
        assert errors[i] == (f"row {i}: path is outside the folder this server reads ({requests.PATH_ROOT_ENV}); "
                             "name a file inside it, relative to it, or send the bytes in 'image'")
    assert errors[5].startswith("row 5: cannot be read") and str(root) not in errors[5]
    assert out["probability"][2] is None  # null in JSON, not NaN


def test_a_path_root_that_is_not_a_folder_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv(requests.PATH_ROOT_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(ImageError, match=f"{requests.PATH_ROOT_ENV}=.*nowhere: not a folder"):
        requests.path_root()
    monkeypatch.setenv(requests.PATH_ROOT_ENV, "")
    assert requests.path_root() is None


def test_a_16_bit_png_row_beside_a_corrupt_one(model, film, tmp_path):
    png = tmp_path / "film16.png"
    assert cv2.imwrite(str(png), cv2.imread(str(film), cv2.IMREAD_GRAYSCALE).astype(np.uint16) * 16)
    out = model.predict(None, pd.DataFrame({"image": [b64(png), base64.b64encode(b"\xff\xd8\xff" * 50).decode()]}))
    assert out["error"][0] is None or (isinstance(out["error"][0], float) and math.isnan(out["error"][0]))
    assert "cannot be decoded" in out["error"][1]


def test_a_failure_no_row_caused_is_a_500_without_traceback_over_http(model, film, monkeypatch):
    import keras
    from mlflow.exceptions import MlflowException

    broken = PneumoniaModel()
    broken.__dict__.update(model.__dict__, model=keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Flatten(),
                                                                  keras.layers.Dense(1)]))  # wrong input size
    frame = pd.DataFrame({"image": [b64(film)]})
    monkeypatch.delenv(SERVING, raising=False)
    with pytest.raises(ValueError):  # in-process: the real exception, to debug
        broken.predict(None, frame)
    monkeypatch.setenv(SERVING, "true")
    with pytest.raises(MlflowException) as caught:
        broken.predict(None, frame)
    body = caught.value.serialize_as_json()
    assert caught.value.get_http_status_code() == 500 and "Traceback" not in body and "stack_trace" not in body
    assert "the server's log has the details" in caught.value.message
