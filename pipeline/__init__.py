"""Pneumonia detection on chest X-rays: tracked hyperparameter search, fine-tuning and registry promotion.

Importing the package sets private defaults before MLflow, Keras or matplotlib are imported, so
they hold for `python -m pipeline` and for code (tests) that imports `pipeline` in-process:
nothing leaves the machine and nothing is written to the home folder unless the user says so.
"""
import logging
import os

# The project's own cache folder (the CLI's --cache-dir default): relative to where the pipeline
# runs, like mlruns/; absolute here because the libraries keep the value for the whole process.
# os.path, not pathlib: this runs before `python -m pipeline` can catch Ctrl-C, so it imports nothing new.
PROJECT_CACHE = os.path.abspath(".cache")


def _private_defaults(env=os.environ) -> None:
    """Telemetry off and library config/caches under .cache/; a value the user set always wins.

    MLflow (3.x) sends usage telemetry and writes an installation id to ~/.config/mlflow/telemetry.json
    unless told not to; a medical pipeline sends nothing by default. Opt in by setting
    MLFLOW_DISABLE_TELEMETRY=false (or DO_NOT_TRACK to anything but 'true') yourself.
    """
    if "MLFLOW_DISABLE_TELEMETRY" not in env and "DO_NOT_TRACK" not in env:
        env["MLFLOW_DISABLE_TELEMETRY"] = "true"
        env["DO_NOT_TRACK"] = "true"  # MLflow reads only 'true'; other tools read any non-empty value
    env.setdefault("KERAS_HOME", os.path.join(PROJECT_CACHE, "keras"))        # not ~/.keras/keras.json
    env.setdefault("MPLCONFIGDIR", os.path.join(PROJECT_CACHE, "matplotlib"))  # not ~/.cache/matplotlib
    # Quieter TensorFlow start-up; set before TensorFlow is imported anywhere.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class _NoRetracingWarning(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls to ... triggered tf.function retracing" warning.

    TensorFlow counts traces per Python code object, not per model: Keras's train/predict step is one
    closure, so every new model (a head per trial, a retrained classifier, a loaded champion) adds a
    trace of "the same function" and five of them read as a retracing bug. Tracing each new model once
    is what a search has to do; every other TensorFlow warning still gets through.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "triggered tf.function retracing" not in record.getMessage()


_private_defaults()
# TensorFlow logs through the standard 'tensorflow' logger; a filter there holds whenever TF is imported later.
logging.getLogger("tensorflow").addFilter(_NoRetracingWarning())
