"""What a command takes besides its steps' configs (those are in pipeline/config.py): flags, not run params.

Like the step configs, each field made with `setting(...)` is a flag, its default written here once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.config import (
    DATA_DIR,
    EXPLAIN_CHOICES,
    LIME_SAMPLES,
    MODEL_NAME,
    SEARCH_EXPERIMENT,
    ConfigError,
    check_folder,
    check_model_uri,
)
from pipeline.options import setting

CHAMPION = f"models:/{MODEL_NAME}@champion"
# Where one command's default differs from the dataclass's, it is said here, once. pretrain: MobileNetV2,
# the backbone the offline recipe was measured with (docs: Results); search and retrain keep ResNet50.
COMMAND_DEFAULTS = {"pretrain": {"backbone": "mobilenetv2"}}


@dataclass(frozen=True)
class DataCheckOptions:
    json: bool = setting(False, "print one JSON object instead of a table")


@dataclass(frozen=True)
class SearchOptions:
    # run_workers checks the number: a supervisor that refuses it has started nothing
    workers: int = setting(1, "worker processes on this machine, one study, cores shared out (Optuna)")


@dataclass(frozen=True)
class RetrainOptions:
    experiment: str = setting(SEARCH_EXPERIMENT, "MLflow experiment of the search")
    search_run_id: str | None = setting(None, "search parent run", default_text="the latest finished search")
    data_dir: Path | None = setting(None, "dataset root", default_text="the one the search used")


@dataclass(frozen=True)
class PretrainOptions:
    output: Path | None = setting(None, "weights file, *.weights.h5",
                                  default_text="pretrained/BACKBONE-SIZEpx-FINGERPRINT.weights.h5")

    def __post_init__(self):
        if self.output is not None:
            check_folder(Path(self.output).parent, "--output")
            if not str(self.output).endswith(".weights.h5"):
                raise ConfigError(f"--output {self.output}: Keras saves backbone weights only to a name ending in "
                                  ".weights.h5; pass e.g. pretrained/mobilenetv2.weights.h5")


@dataclass(frozen=True)
class PromoteOptions:
    model_name: str = setting(MODEL_NAME, "registered model name")
    rollback: bool = setting(False, "make 'previous-champion' the champion again")


@dataclass(frozen=True)
class EvaluateOptions:
    model: str = setting(CHAMPION, "models:/NAME@ALIAS or models:/NAME/VERSION")
    data_dir: Path | None = setting(None, "folder with NORMAL/ and PNEUMONIA/, or a data-set root with test/",
                                    required=True)
    experiment: str = setting("pneumonia-evaluate", "MLflow experiment of the evaluation runs")
    gradcam_images: int = setting(8, "images in the Grad-CAM grid; 0 for none")

    def __post_init__(self):
        check_model_uri(self.model)  # before MLflow is touched
        if not isinstance(self.gradcam_images, int) or self.gradcam_images < 0:
            raise ConfigError(f"--gradcam-images {self.gradcam_images} is invalid: expected an integer >= 0 "
                              "(0 for no grid)")


@dataclass(frozen=True)
class PredictOptions:
    model: str = setting(CHAMPION, "models:/NAME@ALIAS or models:/NAME/VERSION")
    output: Path = setting(Path("outputs/predictions"), "folder for predictions.csv and Grad-CAM overlays")
    explain: str = setting("gradcam", "the overlays written per image; lime/both also give Grad-CAM/LIME "
                                      "agreement", choices=EXPLAIN_CHOICES)
    lime_samples: int = setting(LIME_SAMPLES, "perturbed films LIME fits on per image; about 2-30 s per film "
                                              "on 2 cores, by backbone")

    def __post_init__(self):
        check_model_uri(self.model)
        check_folder(Path(self.output), "--output")


@dataclass(frozen=True)
class ModelCardOptions:
    model: str = setting(CHAMPION, "models:/NAME@ALIAS or models:/NAME/VERSION")
    output: Path | None = setting(None, "write the card to this file instead of printing it", default_text="print it")

    def __post_init__(self):
        check_model_uri(self.model)
        if self.output is not None:
            check_folder(Path(self.output).parent, "--output")
            if Path(self.output).is_dir():
                raise ConfigError(f"--output {self.output} is a folder: give a file name, e.g. "
                                  f"{Path(self.output) / 'model_card.md'}")


@dataclass(frozen=True)
class ServeOptions:
    model: str = setting(CHAMPION, "models:/NAME@ALIAS or models:/NAME/VERSION")
    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(5001, "port to listen on")

    def __post_init__(self):
        check_model_uri(self.model)


@dataclass(frozen=True)
class DownloadOptions:
    data_dir: Path = setting(DATA_DIR, "where the dataset goes")
