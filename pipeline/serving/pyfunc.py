"""The registered model: an MLflow pyfunc that takes image files and returns probability and label.

Preprocessing (decode -> gray -> CLAHE -> resize), the version's calibration, its out-of-distribution
detector and its own threshold live inside it,
so `mlflow models serve`, `mlflow.pyfunc.load_model(...).predict(df)` and `make predict` all run
the same code and nobody re-implements the preprocessing by hand.
"""
from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import mlflow.pyfunc
import numpy as np
import pandas as pd

from pipeline.config import PreprocessConfig
from pipeline.data.dataset import CLASSES
from pipeline.data.preprocess import ImageError, decode_bytes, preprocess_array, to_model_input  # noqa: F401
from pipeline.modeling.calibration import Calibration
from pipeline.modeling.ensemble import mean_probability
from pipeline.modeling.ood import OodDetector

# decode_bytes (re-exported above) is training's own: JPEG, PNG or DICOM bytes give the array training decodes
from pipeline.serving import requests

KERAS_ARTIFACT = "keras_model"  # the artifact key inside the pyfunc, and the run's mlflow.keras model path
# member i > 0 of an ensemble version: keras_model_<i> (member 0 is KERAS_ARTIFACT, so a one-member version and
# every version saved before ensembles look the same)
INPUT_COLUMNS = ("image", "path")
OOD_ARTIFACT = "ood"  # the detector's arrays (ood.npz) inside the pyfunc; absent in versions saved without one
OUTPUT_COLUMNS = ("probability", "label", "threshold", "in_distribution", "ood_score")
MIN_SIDE = 64  # px: anything smaller is no radiograph (a 1x1 PNG used to get a confident answer)


@dataclass
class ModelOutputs:
    """One forward pass: the network's raw probability, the served (calibrated) one and the OOD score."""
    raw: np.ndarray
    probability: np.ndarray
    ood_score: np.ndarray
    in_distribution: np.ndarray


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
    PNEUMONIA_SERVE_PATH_ROOT). Output: `probability` of pneumonia (calibrated), `label` at the version's
    threshold, that `threshold`, `in_distribution` (False: the film is unlike the training films, do not trust
    the answer) and `ood_score`; where a row cannot be read, an `error` column says why (its probability is empty)."""

    # What a model built without load_context (tests, benchmarks) has: no paths over HTTP, raw probabilities,
    # no OOD guard, one member (`model`), no test-time augmentation; load_context sets each from the version.
    path_root = None
    calibration = Calibration()
    ood = None
    scorer = None
    extra_members: tuple = ()
    tta = "none"

    @property
    def members(self) -> list:
        """Every Keras classifier the version averages; `model` is member 0 (the OOD guard's features)."""
        return [self.model, *self.extra_members]

    def load_context(self, context):
        import keras

        cfg = context.model_config
        self.preprocess_cfg = PreprocessConfig(int(cfg["image_size"]), float(cfg["clahe_clip_limit"]),
                                               int(cfg["clahe_tile_grid"]))
        self.threshold = float(cfg["threshold"])
        self.gradcam_layer = cfg.get("gradcam_layer")
        self.model = keras.models.load_model(context.artifacts[KERAS_ARTIFACT], compile=False)
        self.extra_members = tuple(keras.models.load_model(context.artifacts[member_artifact(i)], compile=False)
                                   for i in range(1, int(cfg.get("members", 1))))
        self.tta = cfg.get("tta", "none")
        self.calibration = Calibration.from_config(cfg)
        ood_file = (context.artifacts or {}).get(OOD_ARTIFACT)
        self.ood = OodDetector.load(Path(ood_file)) if ood_file else None
        self.scorer = None  # probability and pooled features in one pass, for a feature-space detector
        if self.ood is not None and self.ood.needs_features:
            self.scorer = keras.Model(self.model.input, [self.model.output, self.model.get_layer("pool").output])
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

    def gray(self, raw: np.ndarray, name: str = "image") -> np.ndarray:
        """(size, size) uint8 model view of a decoded file."""
        if min(raw.shape[:2]) < MIN_SIDE:
            raise ImageError(f"{name}: {raw.shape[1]}x{raw.shape[0]} px is too small for a radiograph "
                             f"(at least {MIN_SIDE} px on each side): no prediction made")
        try:
            return preprocess_array(raw, self.preprocess_cfg)
        except cv2.error as err:
            raise ImageError(f"cannot be preprocessed ({err.err})") from err

    def outputs(self, grays: np.ndarray) -> ModelOutputs:
        grays = np.asarray(grays)
        if not len(grays):
            empty = np.zeros(0, np.float64)
            return ModelOutputs(empty, empty, empty, np.zeros(0, bool))
        raw, features = mean_probability(self.members, grays, self.tta, feature_model=self.scorer)
        if self.ood is None:  # a version saved without a detector: nothing is flagged, and the score says so
            score = np.full(len(raw), np.nan)
        else:
            score = self.ood.score(features, grays).astype(np.float64)
        flagged = self.ood.flags(score) if self.ood is not None else np.zeros(len(raw), bool)
        return ModelOutputs(raw, self.calibration.apply(raw), score, ~flagged)

    def gradcam(self, pixels: np.ndarray) -> np.ndarray:
        """Grad-CAM maps of the films, averaged over the members (each member is a flat model)."""
        from pipeline.explain.gradcam import gradcam

        return np.mean([gradcam(member, pixels, self.gradcam_layer) for member in self.members], axis=0)

    def probabilities(self, grays: np.ndarray) -> np.ndarray:
        """The served probability: calibrated when the version carries a calibration."""
        return self.outputs(grays).probability

    def table(self, proba: np.ndarray, ood_score: np.ndarray | None = None,
              in_distribution: np.ndarray | None = None) -> pd.DataFrame:
        n = len(proba)
        return pd.DataFrame({"probability": proba,
                             "label": [CLASSES[int(p >= self.threshold)] for p in proba],
                             "threshold": np.full(n, self.threshold),
                             "in_distribution": np.ones(n, bool) if in_distribution is None else in_distribution,
                             "ood_score": np.full(n, np.nan) if ood_score is None else ood_score})

    def output_table(self, grays: np.ndarray) -> pd.DataFrame:
        out = self.outputs(grays)
        return self.table(out.probability, out.ood_score, out.in_distribution)

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
                grays.append(self.gray(self.raw_image(row, index), f"row {index}"))
            except ImageError as err:
                errors[position] = str(err)
        if errors and len(errors) == len(frame):
            raise requests.RequestError(list(errors.values()))
        answered = self.output_table(np.asarray(grays))
        if not errors:
            return answered
        return requests.with_row_errors(answered, errors, len(frame), self.threshold)


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    inputs = Schema([ColSpec("string", "image", required=False), ColSpec("string", "path", required=False)])
    outputs = Schema([ColSpec("double", "probability"), ColSpec("string", "label"), ColSpec("double", "threshold"),
                      ColSpec("boolean", "in_distribution"), ColSpec("double", "ood_score")])
    return ModelSignature(inputs=inputs, outputs=outputs)


def example_input(gray_film: np.ndarray) -> pd.DataFrame:
    """A small JPEG of a real input, base64-encoded: what a client sends (kept small for the MLmodel)."""
    ok, jpeg = cv2.imencode(".jpg", gray_film)
    return pd.DataFrame({"image": [base64.b64encode(jpeg.tobytes()).decode("ascii")]})


def member_artifact(index: int) -> str:
    return KERAS_ARTIFACT if index == 0 else f"{KERAS_ARTIFACT}_{index}"


def save_pyfunc(path: Path, keras_file: Path | list[Path], preprocess_cfg: PreprocessConfig, threshold: float,
                gradcam_layer: str, example: pd.DataFrame, calibration: Calibration | None = None,
                ood: OodDetector | None = None, tta: str = "none") -> None:
    """Write the pyfunc folder; the pipeline package travels with it (code_paths) so a server needs no checkout.
    Several Keras files make an ensemble version (their mean probability, member 0 first)."""
    keras_files = [Path(f) for f in keras_file] if isinstance(keras_file, (list, tuple)) else [Path(keras_file)]
    keras_file = keras_files[0]
    config = {**asdict(preprocess_cfg), "threshold": float(threshold), "gradcam_layer": gradcam_layer,
              **(calibration or Calibration()).to_config(), "members": len(keras_files), "tta": tta}
    artifacts = {member_artifact(i): str(f) for i, f in enumerate(keras_files)}
    if ood is not None:
        ood_file = Path(keras_file).with_name("ood.npz")
        ood.save(ood_file)
        artifacts[OOD_ARTIFACT] = str(ood_file)
        config.update({"ood_detector": ood.name, "ood_threshold": float(ood.threshold)})
    mlflow.pyfunc.save_model(str(path), python_model=PneumoniaModel(), artifacts=artifacts,
                             model_config=config, signature=signature(), input_example=example,
                             code_paths=[str(Path(__file__).resolve().parents[1])], pip_requirements=requirements())


def requirements() -> list[str]:
    """What serving imports, pinned to what is installed (MLflow's own inference would load TF in a subprocess)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for package in ("mlflow", "tensorflow-cpu", "keras", "opencv-python-headless", "numpy", "pandas", "scikit-learn",
                    "tqdm", "pydicom", "pillow"):  # pillow: pydicom's JPEG / JPEG 2000 decoder
        try:
            pins.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            continue
    return pins


def load(model_uri: str) -> PneumoniaModel:
    """The PneumoniaModel behind a pyfunc URI, loaded once: its Keras model, threshold and preprocessing."""
    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
