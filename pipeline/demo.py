"""`make demo` (`python -m pipeline.demo`): every step of the pipeline on a generated SYNTHETIC data set, in a few minutes on a CPU.

It shows the features working before the real data is there. Its figures mean nothing medically:
the data set, the MLflow experiment and the registered model all say SYNTHETIC. It is a user of the
CLI (each step is one `python -m pipeline` command line), not a part of it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline import cli
from pipeline.data.synthetic import make_synthetic_dataset
from pipeline.registry.promotion import KEPT_EXIT_CODE

DATA_DIR = Path("data/SYNTHETIC-demo")
EXPERIMENT = "SYNTHETIC-demo"
MODEL_NAME = "SYNTHETIC-demo-classifier"
TAGS = ["--tag", "dataset=SYNTHETIC", "--tag", "demo=true"]  # on every run the demo writes
COMMON = ["--data-dir", str(DATA_DIR), "--backbone", "mobilenetv2", "--weights", "none", "--image-size", "96"]


def _model_uri() -> str:
    """The champion; the challenger when promotion refused it (the demo still shows prediction)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient().get_model_version_by_alias(MODEL_NAME, "champion")
        return f"models:/{MODEL_NAME}@champion"
    except MlflowException:
        print("no champion (promotion refused the challenger): predicting with the challenger")
        return f"models:/{MODEL_NAME}@challenger"


def run_demo(trials: int = 3) -> int:

    make_synthetic_dataset(DATA_DIR, per_class_train=150, per_class_test=30, size=128)
    steps = [
        ("search with Optuna", ["search", *COMMON, "--engine", "optuna", "--trials", str(trials), "--epochs", "8",
                                "--experiment", EXPERIMENT, "--space", "search_spaces/default.yaml"]),
        ("search with Keras Tuner", ["search", *COMMON, "--engine", "kerastuner", "--trials", str(trials),
                                     "--epochs", "8", "--experiment", EXPERIMENT, "--space", "search_spaces/default.yaml"]),
        ("retrain the best trial", ["retrain-best", "--experiment", EXPERIMENT, "--epochs", "1", "--fine-tune-epochs", "12",
                                    "--fine-tune-layers", "all", "--fine-tune-lr", "0.001", "--patience", "12",
                                    "--model-name", MODEL_NAME, "--gradcam-images", "8"]),
        ("promote", ["promote", "--model-name", MODEL_NAME]),
        ("predict", ["predict", "--model", f"models:/{MODEL_NAME}@champion", "--output", "outputs/SYNTHETIC-demo",
                     *[str(p) for p in sorted((DATA_DIR / "test" / "PNEUMONIA").iterdir())[:2]],
                     *[str(p) for p in sorted((DATA_DIR / "test" / "NORMAL").iterdir())[:2]]]),
    ]
    for i, (title, argv) in enumerate(steps, 1):
        print(f"\n=== demo step {i}/{len(steps)}: {title} (SYNTHETIC data) ===", flush=True)
        if title == "predict":
            argv[argv.index("--model") + 1] = _model_uri()
        code = cli.main([*TAGS, *argv])
        if title == "promote" and code == KEPT_EXIT_CODE:
            print("demo goes on: a refused promotion is a normal outcome (exit 3)")
            continue
        if code:
            print(f"demo stopped: step '{title}' exited with {code}")
            return code
    print("\nDemo finished on SYNTHETIC data (its figures are not results). See it all with: make ui")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials per engine (default: %(default)s)")
    return run_demo(trials=parser.parse_args(argv).trials)


if __name__ == "__main__":
    from pipeline.__main__ import run

    sys.exit(run(main))
