"""One trial as an MLflow child run, the same for both engines, so their runs line up in the compare view."""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import keras
import mlflow
import pandas as pd

from pipeline.config import (
    PipelineError,
    SearchConfig,
)
from pipeline.evaluate.metrics import LOWER_IS_BETTER
from pipeline.explain.gradcam import gradcam_on_features, grid_figure
from pipeline.infra import tracking
from pipeline.modeling.features import FeatureSet
from pipeline.search.objective import TrialResult, head_proba, objective
from pipeline.search.workers import check_stop

GRADCAM_ARTIFACT = "gradcam/val_grid.png"


MAX_CONSECUTIVE_FAILURES = 3


class _QuietInterrupt(logging.Filter):
    """Optuna logs a trial stopped by Ctrl-C as failed, KeyboardInterrupt traceback and all, above the CLI's
    one `interrupted:` line; the trial's run is tagged KILLED instead."""

    def __init__(self):
        super().__init__()
        self.stopped: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        number = message.split(" ", 2)[1] if message.startswith("Trial ") else ""
        if record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt):
            self.stopped.add(number)
            return False
        return not (number in self.stopped and "failed with value" in message)


def quiet_interrupts() -> None:
    """Once per process: Optuna's trial-failure log gives no traceback for a Ctrl-C."""
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _QuietInterrupt) for f in logger.filters):
        logger.addFilter(_QuietInterrupt())


class SearchError(PipelineError, RuntimeError):
    """The search could not produce a usable trial, or cannot resume the study it was pointed at."""


@dataclass
class SearchOutcome:
    parent_run_id: str
    best_trial: int
    best_score: float
    best_params: dict
    best_run_id: str
    trials: pd.DataFrame


def _fmt(params: dict) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class TrialRunner:
    """Runs one trial as an MLflow child run; shared by both engines so their runs line up."""

    def __init__(self, features: FeatureSet, cfg: SearchConfig, engine_total: int, study_name: str = "", *,
                 seed: int):
        self.features, self.cfg, self.total, self.study_name = features, cfg, engine_total, study_name
        self.seed = seed  # DataConfig.seed, its one home: trial n trains with seed + n
        self.best: float | None = None
        self.run_ids: dict[int, str] = {}
        self.current_run_id: str | None = None  # the trial run in progress, for cleanup on Ctrl-C
        quiet_interrupts()

    def _better(self, a: float, b: float | None) -> bool:
        if b is None or math.isnan(b):
            return not math.isnan(a)
        return a < b if self.cfg.metric in LOWER_IS_BETTER else a > b

    def __call__(self, number: int, params: dict, keep_going: Callable[[int, dict], bool],
                 on_start: Callable[[str], None] | None = None) -> TrialResult:
        keras.backend.clear_session()  # models of earlier trials would otherwise pile up in memory
        cfg = self.cfg
        with mlflow.start_run(run_name=f"trial-{number:03d}", nested=True,
                              tags={tracking.RUN_TYPE: "trial", "trial_number": str(number), "engine": cfg.engine,
                                    "study_name": self.study_name, **tracking.worker_tags()}) as run:
            self.run_ids[number] = self.current_run_id = run.info.run_id
            if on_start is not None:
                on_start(run.info.run_id)
            mlflow.log_params(params)

            def on_epoch(epoch: int, logs: dict) -> bool:
                tracking.log_epoch(logs, epoch)
                check_stop()  # Ctrl-C / SIGTERM: stop here, between epochs
                return keep_going(epoch, logs)

            try:
                result = objective(params, self.features, epochs=cfg.epochs, batch_size=cfg.batch_size,
                                   patience=cfg.patience, metric=cfg.metric, seed=self.seed + number,
                                   imbalance=cfg.imbalance, on_epoch=on_epoch)
            except KeyboardInterrupt:
                mlflow.set_tags({"status": "KILLED", "error": "stopped by Ctrl-C or SIGTERM"})
                raise
            except Exception as err:
                mlflow.set_tags({"status": "FAILED", "error": f"{err.__class__.__name__}: {err}"[:5000]})
                print(f"trial {number:3d} FAILED: {err.__class__.__name__}: {err}", flush=True)
                raise  # leaving the `with` block marks this child run FAILED
            mlflow.log_metrics({**result.metrics, "duration_s": result.seconds,
                                "epochs_run": len(result.history.get("loss", []))})
            cam_seconds = self._log_gradcam(result)
            mlflow.log_metric("gradcam_s", cam_seconds)
            mlflow.set_tag("status", result.status)
        self.current_run_id = None
        if result.status == "COMPLETE" and self._better(result.score, self.best):
            self.best = result.score
        study_best = self._study_best()
        if study_best is not None and self._better(study_best, self.best):
            self.best = study_best
        best = "n/a" if self.best is None else f"{self.best:.4f}"
        print(f"trial {number:3d}/{self.total} {result.status:8s} {_fmt(params)} | "
              f"{cfg.metric}={result.score:.4f} | best {best} | {result.seconds:.1f}s", flush=True)
        return result

    def _study_best(self) -> float | None:
        """The best finished trial of the whole study (other workers, earlier runs of a resumed one), as its
        MLflow trial runs hold it: the line says "best" of what `make retrain-best` will pick from."""
        parent = mlflow.active_run()
        if parent is None or not self.study_name:
            return None
        order = "ASC" if self.cfg.metric in LOWER_IS_BETTER else "DESC"
        runs = mlflow.search_runs([parent.info.experiment_id], max_results=1, output_format="list",
                                  filter_string=f"tags.study_name = '{self.study_name}' and tags.status = 'COMPLETE' "
                                                f"and tags.`{tracking.RUN_TYPE}` = 'trial'",
                                  order_by=[f"metrics.{self.cfg.metric} {order}"])
        value = runs[0].data.metrics.get(self.cfg.metric) if runs else None
        return None if value is None or math.isnan(value) else float(value)

    def _log_gradcam(self, result: TrialResult) -> float:
        f = self.features
        if not len(f.cam_maps):
            return 0.0
        start = time.perf_counter()
        size = f.cam_images.shape[1]
        cams = gradcam_on_features(result.head, f.cam_maps, size)
        probs = head_proba(result.head, f.cam_maps.mean(axis=(1, 2)))
        fig = grid_figure(f.cam_images, cams, f.cam_labels, probs,
                          title=f"Grad-CAM, fixed validation images ({self.cfg.metric}={result.score:.3f})")
        tracking.log_figure(fig, GRADCAM_ARTIFACT)
        return time.perf_counter() - start
