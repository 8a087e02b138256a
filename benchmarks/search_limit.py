"""The limit of a cached search: a whole N-trial search against one backbone pass over the same images.

A search that caches features must run the backbone over every training image at least once;
that one pass is the physical limit. This script measures, in one process and one run:
  limit:  decode + CLAHE of the images, then one forward pass of the backbone over the train images;
  search: the same decode, then the project's search exactly as `make search` runs it (feature cache
          of train + val + Grad-CAM maps, N Optuna trials, each logged to MLflow with its Grad-CAM
          grid; MLflow and Optuna on SQLite in a temporary folder);
and prints the ratio (target <= 1.5x) with where the search's time went. `--xla` also times the
pass compiled with XLA (jit_compile), one of the options the issue lists.
"""
from __future__ import annotations

import os
import time

import common
from common import tempdir

STORE = tempdir("bench-limit-")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{STORE}/mlflow.db"

import keras  # noqa: E402
import mlflow  # noqa: E402
import numpy as np  # noqa: E402

from pipeline.config import ModelConfig, SearchConfig  # noqa: E402
from pipeline.data.dataset import load_dataset  # noqa: E402
from pipeline.data.preprocess import to_model_input  # noqa: E402
from pipeline.infra import tracking  # noqa: E402
from pipeline.modeling.backbones import build_backbone, feature_extractor  # noqa: E402
from pipeline.modeling.features import build_features, calibrate_on_train  # noqa: E402
from pipeline.search.engines import run_search  # noqa: E402
from pipeline.search.space import load_space  # noqa: E402

TARGET = 1.5


def one_pass(a, images: np.ndarray, xla: bool = False) -> float:
    """Seconds for one forward pass of the (calibrated, random-start) backbone over the images, the
    way build_features batches them; a compiled pass counts its compile time."""
    keras.backend.clear_session()
    base = build_backbone(ModelConfig(a.backbone, "none", a.image_size), seed=a.seed)
    calibrate_on_train(base, images, a.seed)  # as build_features does
    model = feature_extractor(base)
    if xla:
        model.compile(jit_compile=True)
    start = time.perf_counter()
    for i in range(0, len(images), a.batch_size):
        model.predict_on_batch(to_model_input(images[i:i + a.batch_size]))
    return time.perf_counter() - start


def main() -> None:
    p = common.full_size_search_parser(__doc__.splitlines()[0])
    p.add_argument("--xla", action="store_true", help="also time one pass compiled with XLA")
    a = p.parse_args()
    a.per_class = a.per_class or None  # 0: every image (the full training set)
    common.header("the limit of a cached search: N-trial search vs one backbone pass", a)
    print(f"  TensorFlow warm-up (untimed): {common.warm_up(a):.1f} s", flush=True)
    data_cfg, pre_cfg, model_cfg, aug_cfg = common.configs(a)
    times: dict[str, float] = {}
    with common.timed(times, "decode"):
        dataset = load_dataset(data_cfg, pre_cfg, progress=False)
    x_train, _ = dataset.split("train")
    n_val = len(dataset.split("val")[0])
    print(f"  images: train {len(x_train)}, val {n_val} (decode + CLAHE of train/val/test {times['decode']:.1f} s)",
          flush=True)

    times["pass"] = one_pass(a, x_train)
    print(f"  one backbone pass over the {len(x_train)} train images: {times['pass']:.1f} s "
          f"({len(x_train) / times['pass']:.0f} img/s)", flush=True)
    if a.xla:
        times["pass_xla"] = one_pass(a, x_train, xla=True)
        print(f"  the same pass compiled with XLA (compile included): {times['pass_xla']:.1f} s "
              f"({common.ratio(times['pass'], times['pass_xla'])} vs plain)", flush=True)

    cfg = SearchConfig(trials=a.trials, epochs=a.epochs, batch_size=a.batch_size, patience=a.patience,
                       space=a.space, experiment="bench-limit", storage=f"sqlite:///{STORE}/optuna.db")
    keras.backend.clear_session()
    common.clock_calibration(times)
    with common.timed(times, "features"):
        features = build_features(dataset, model_cfg, pre_cfg, aug_cfg, cfg.augment_views, data_cfg.cache_dir,
                                  seed=a.seed, cam_count=cfg.gradcam_images, batch_size=a.batch_size, progress=False)
    with common.timed(times, "trials"):
        run_search(dataset, features, load_space(a.space), cfg, data_cfg, pre_cfg, aug_cfg, model_cfg)
    runs = mlflow.search_runs(experiment_names=["bench-limit"], filter_string=f"tags.`{tracking.RUN_TYPE}` = 'trial'")
    fit_s, cam_s = float(runs["metrics.duration_s"].sum()), float(runs["metrics.gradcam_s"].sum())
    epochs = float(runs["metrics.epochs_run"].sum())

    search = times["features"] + times["trials"]
    print(f"\nlimit:  one backbone pass over train                         {times['pass']:8.1f} s")
    print(f"search: feature cache (train + val + {cfg.gradcam_images} Grad-CAM maps)       {times['features']:8.1f} s"
          f"  (BatchNorm calibration {times.get('calibration', 0.0):.1f} s)")
    print(f"        {a.trials} trials as `make search` runs them                {times['trials']:8.1f} s"
          f"  = head training {fit_s:.1f} s ({epochs:.0f} epochs, {fit_s / max(epochs, 1):.2f} s each) + Grad-CAM "
          f"{cam_s:.1f} s + MLflow/Optuna/plots {times['trials'] - fit_s - cam_s:.1f} s")
    print(f"        per trial: {times['trials'] / a.trials:.2f} s")
    ratio = search / times["pass"]
    print(f"RATIO search / one pass: {ratio:.2f}x   target <= {TARGET}x: "
          f"{'met' if ratio <= TARGET else 'NOT met'}")
    print(f"      with decode on both sides: {(times['decode'] + search) / (times['decode'] + times['pass']):.2f}x; "
          f"trials alone are {times['trials'] / times['pass']:.2f} passes")


if __name__ == "__main__":
    main()
