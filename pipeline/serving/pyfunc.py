"""The registered model: an MLflow pyfunc that takes image files and returns probability and label.

Preprocessing (decode -> gray -> CLAHE -> resize) and the version's own threshold live inside it,
so `mlflow models serve`, `mlflow.pyfunc.load_model(...).predict(df)` and `make predict` all run
the same code and nobody re-implements the preprocessing by hand.
"""
from __future__ import annotations

import base64
from dataclasses import asdict
from pathlib import Path

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd

from pipeline.config import PreprocessConfig
from pipeline.data.dataset import CLASSES
from pipeline.data.preprocess import ImageError, preprocess_array, to_model_input
from pipeline.serving import requests

KERAS_ARTIFACT = "keras_model"  # the artifact key inside the pyfunc, and the run's mlflow.keras model path
INPUT_COLUMNS = ("image", "path")
OUTPUT_COLUMNS = ("probability", "label", "threshold")


def decode_bytes(data: bytes, name: str = "image") -> np.ndarray:
    """File bytes (JPEG or PNG; 8/16 bit; gray, RGB or RGBA) -> the array OpenCV decodes, unchanged."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if image is None or image.size == 0:
        raise ImageError(f"{name}: cannot be decoded as a JPEG or PNG image")
    return image


def decode_base64(text: str, name: str = "image") -> np.ndarray:
    return decode_bytes(requests.base64_bytes(text, name), name)


def read_path(path: str, name: str | None = None) -> np.ndarray:
    """`name` is what an error shows instead of the path (a served row: its number, not the server's disk)."""
    try:
        data = Path(path).read_bytes()
    except (OSError, ValueError) as err:
        raise ImageError(f"{name or path}: cannot be read ({getattr(err, 'strerror', None) or err})") from None
    return decode_bytes(data, name or path)


class PneumoniaModel(mlflow.pyfunc.PythonModel):
    """Input: a DataFrame with `image` (base64 file bytes) or `path` per row (over HTTP only inside
    PNEUMONIA_SERVE_PATH_ROOT). Output: `probability` of pneumonia, `label` at the version's threshold, and
    that `threshold`; where a row cannot be read, an `error` column says why (its probability is empty)."""

    path_root = None  # models built without load_context (tests, benchmarks) read no paths over HTTP

    def load_context(self, context):
        import keras

        cfg = context.model_config
        self.preprocess_cfg = PreprocessConfig(int(cfg["image_size"]), float(cfg["clahe_clip_limit"]),
                                               int(cfg["clahe_tile_grid"]))
        self.threshold = float(cfg["threshold"])
        self.gradcam_layer = cfg.get("gradcam_layer")
        self.model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self.path_root = requests.path_root()  # read once: a request cannot widen it
        requests.quiet_parse_errors()

    def raw_image(self, row: pd.Series, index) -> np.ndarray:
        """The decoded file of one row: `image` wins over `path` when both are given."""
        image = row.get("image")
        if isinstance(image, str) and image:
            return decode_base64(image, f"row {index}")
        path = row.get("path")
        if isinstance(path, str) and path:
            if requests.served():
                return read_path(str(requests.served_path(path, self.path_root, f"row {index}")), f"row {index}")
            return read_path(path)
        raise ImageError(f"row {index}: needs a column 'image' (base64 file bytes) or 'path'")

    def gray(self, raw: np.ndarray) -> np.ndarray:
        """(size, size) uint8 model view of a decoded file."""
        try:
            return preprocess_array(raw, self.preprocess_cfg)
        except cv2.error as err:
            raise ImageError(f"cannot be preprocessed ({err.err})") from err

    def probabilities(self, grays: np.ndarray) -> np.ndarray:
        if not len(grays):
            return np.zeros(0, np.float64)
        return self.model.predict(to_model_input(grays), batch_size=32, verbose=0).reshape(-1).astype(np.float64)

    def table(self, proba: np.ndarray) -> pd.DataFrame:
        return pd.DataFrame({"probability": proba,
                             "label": [CLASSES[int(p >= self.threshold)] for p in proba],
                             "threshold": np.full(len(proba), self.threshold)})

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        """One output row per input row; a row that cannot be read gets its reason in `error` and the others are
        answered. When no row can be, nothing is: a RequestError (HTTP 400, one line per row)."""
        with requests.served_errors():
            return self._answer(pd.DataFrame(model_input))

    def _answer(self, frame: pd.DataFrame) -> pd.DataFrame:
        if not set(INPUT_COLUMNS) & set(frame.columns):
            raise requests.RequestError([f"input has columns {[str(c) for c in frame.columns][:20]}: expected "
                                         "'image' (base64 file bytes) or 'path'"])
        grays, errors = [], {}
        for position, (index, row) in enumerate(frame.iterrows()):
            try:
                grays.append(self.gray(self.raw_image(row, index)))
            except ImageError as err:
                errors[position] = str(err)
        if errors and len(errors) == len(frame):
            raise requests.RequestError(list(errors.values()))
        answered = self.table(self.probabilities(np.asarray(grays)))
        if not errors:
            return answered
        return requests.with_row_errors(answered, errors, len(frame), self.threshold)


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("string", "image", required=False), ColSpec("string", "path", required=False)])
    outputs = Schema([ColSpec("double", "probability"), ColSpec("string", "label"), ColSpec("double", "threshold")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def example_input(gray_film: np.ndarray) -> pd.DataFrame:
    """A small JPEG of a real input, base64-encoded: what a client sends (kept small for the MLmodel)."""
    ok, jpeg = cv2.imencode(".jpg", gray_film)
    return pd.DataFrame({"image": [base64.b64encode(jpeg.tobytes()).decode("ascii")]})


def save_pyfunc(path: Path, keras_file: Path, preprocess_cfg: PreprocessConfig, threshold: float,
                gradcam_layer: str, example: pd.DataFrame) -> None:
    """Write the pyfunc folder; the pipeline package travels with it (code_paths) so a server needs no checkout."""
    config = {**asdict(preprocess_cfg), "threshold": float(threshold), "gradcam_layer": gradcam_layer}
    mlflow.pyfunc.save_model(str(path), python_model=PneumoniaModel(), artifacts={KERAS_ARTIFACT: str(keras_file)},
                             model_config=config, signature=signature(), input_example=example,
                             code_paths=[str(Path(__file__).resolve().parents[1])], pip_requirements=requirements())


def requirements() -> list[str]:
    """What serving imports, pinned to what is installed (MLflow's own inference would load TF in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "tensorflow-cpu", "keras", "opencv-python-headless", "numpy", "pandas", "scikit-learn",
                    "tqdm"):
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def load(model_uri: str) -> PneumoniaModel:
    """The PneumoniaModel behind a pyfunc URI, loaded once: its Keras model, threshold and preprocessing."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
