"""The offline path: `pretrain` trains a backbone from a random start on the train split, saves it as
a no-top weights file, and `search --weights FILE` then ranks heads on those features; the heads
themselves are trained by one compiled graph per width (pipeline/modeling/headfit.py) with Keras's arithmetic."""
from __future__ import annotations

from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest

from pipeline.cli import main
from pipeline.config import AugmentConfig, ModelConfig
from pipeline.modeling import headfit
from pipeline.modeling.backbones import build_backbone, build_head, compile_model
from tests.helpers import REPO, search_argv


@pytest.mark.slow
def test_pretrained_file_is_the_backbone_a_search_then_uses(synthetic_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    weights = tmp_path / "pretrained" / "mnv2.weights.h5"
    argv = ["pretrain", "--data-dir", str(synthetic_dir), "--cache-dir", str(tmp_path / "cache"), "--backbone",
            "mobilenetv2", "--image-size", "32", "--epochs", "2", "--warmup-epochs", "1", "--brightness", "0.1",
            "--contrast", "0.1", "--output", str(weights)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"pretrained backbone saved to {weights}" in out and f"make search WEIGHTS={weights}" in out

    # The file holds trained weights: not the seeded random start, and loaded as they were saved.
    random_start = build_backbone(ModelConfig("mobilenetv2", "none", 32), seed=42)
    loaded = build_backbone(ModelConfig("mobilenetv2", str(weights), 32), seed=42)
    changed = [not np.allclose(a, b) for a, b in zip(random_start.get_weights(), loaded.get_weights())]
    assert sum(changed) > len(changed) // 2

    # Nothing is lost if the local file goes: the MLflow run holds it, with the curves.
    [run] = mlflow.search_runs(experiment_names=["pneumonia-pretrain"], output_format="list")
    assert run.info.status == "FINISHED" and run.data.tags["weights_file"] == str(weights)
    assert [f.path for f in mlflow.artifacts.list_artifacts(run_id=run.info.run_id, artifact_path="backbone")] == [
        "backbone/mnv2.weights.h5"]
    assert len(mlflow.MlflowClient().get_metric_history(run.info.run_id, "epoch/val_auc")) == 2

    search = search_argv(synthetic_dir, tmp_path / "cache", "optuna", 1, "t-offline")
    search[search.index("--weights") + 1] = str(weights)
    assert main(search) == 0
    [parent] = mlflow.search_runs(experiment_names=["t-offline"], filter_string="tags.best_trial != ''",
                                  output_format="list")
    assert parent.data.params["weights"] == str(weights)


def test_pretrained_files_live_where_make_clean_does_not_reach():
    """docs/walkthrough.md (the offline path): the default file sits outside .cache/, so `make clean` (an hour of training) keeps it."""
    import re

    from pipeline.train.pretrain import default_output

    target = default_output(ModelConfig("mobilenetv2", "none", 96), "d2f3d7ff6b72956c")
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^clean:.*\n\t(.*)$", makefile, flags=re.M).group(1)
    assert target == Path("pretrained/mobilenetv2-96px-d2f3d7ff6b72956c.weights.h5")
    assert recipe.startswith("rm -rf ") and target.parts[0] not in recipe.split()[2:]


@pytest.mark.parametrize("output, message", [
    ("x.h5", "error: --output x.h5: Keras saves backbone weights only to a name ending in .weights.h5; pass e.g. "
             "pretrained/mobilenetv2.weights.h5"),
    ("a-file/x.weights.h5", "error: --output a-file is a file, not a folder: remove it or choose another --output"),
])
def test_bad_pretrain_output_is_one_error_line_before_any_work(output, message, synthetic_dir, tmp_path, monkeypatch,
                                                               capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    assert main(["pretrain", "--data-dir", str(synthetic_dir), "--output", output]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0].startswith(message), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_head_graph_is_compiled_once_for_every_trial_of_a_width():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype(np.float32), rng.integers(0, 2, 40).astype(np.float32)
    graph = headfit.HeadGraph(6, 4)
    for trial in range(3):
        keras.backend.clear_session()  # as TrialRunner does before every trial
        graph.reset(build_head(6, 4, 0.2, 1e-3, seed=trial).get_weights(), 1e-2, 0.2, 1e-3)
        for epoch in range(2):
            graph.train_epoch(x, y, np.ones(40, np.float32), np.array([trial, epoch]), np.int32(8))
    assert graph.traces == 1


def test_head_graph_trains_exactly_as_keras_fit_does():
    """Full-batch epochs (so the shuffle order cannot matter), dropout 0: the same start, class
    weights, L2 and Adam give the same weights as keras.Model.fit."""
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(24, 5)).astype(np.float32), (rng.random(24) < 0.3).astype(np.float32)
    weights = {0: 0.7, 1: 1.8}
    keras_head = compile_model(build_head(5, 3, 0.0, 1e-2, seed=3), 0.05)
    start = keras_head.get_weights()
    keras_head.fit(x, y, batch_size=24, epochs=4, shuffle=False, verbose=0, class_weight=weights)

    graph = headfit.HeadGraph(5, 3)
    graph.reset(start, 0.05, 0.0, 1e-2)
    sample_weight = np.where(y == 1, weights[1], weights[0]).astype(np.float32)
    for epoch in range(4):
        graph.train_epoch(x, y, sample_weight, np.array([0, epoch]), np.int32(24))
    for ours, theirs in zip(graph.weights, keras_head.get_weights()):
        np.testing.assert_allclose(ours.numpy(), theirs, atol=2e-5)
    assert not np.allclose(start[0], keras_head.get_weights()[0]), "the control: training changed the weights"


def test_intensity_augmentation_changes_exposure_and_contrast_only_when_asked():
    from pipeline.data.augment import augmenter

    film = np.tile(np.linspace(40, 200, 32, dtype=np.float32), (4, 32, 1))[..., None]
    still = AugmentConfig(rotation=0, shift=0, zoom=0, shear=0, flip=False)
    assert np.allclose(augmenter(still)(film, training=True), film)
    brighter = augmenter(AugmentConfig(rotation=0, shift=0, zoom=0, shear=0, flip=False, brightness=0.3,
                                       contrast=0.3))(film, training=True)
    out = keras.ops.convert_to_numpy(brighter)
    assert not np.allclose(out, film) and out.min() >= 0 and out.max() <= 255
