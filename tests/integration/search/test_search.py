"""Both engines end to end on synthetic images, against a real SQLite-backed MLflow and Optuna storage."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest
import sqlalchemy.exc

from pipeline.cli import main
from pipeline.config import AugmentConfig, DataConfig, ModelConfig, PreprocessConfig
from pipeline.data.dataset import load_dataset
from pipeline.modeling.features import build_features
from pipeline.search.space import PARAMS
from pipeline.search.trials import GRADCAM_ARTIFACT
from tests.helpers import REPO, runs_of, search_argv, time_limit

pytestmark = pytest.mark.slow  # real Keras training, MLflow and Optuna stores
FINAL_METRICS = ("val_auc", "val_accuracy", "val_precision", "val_recall", "val_f1", "val_loss", "duration_s")


@pytest.fixture()
def workdir(tmp_path, monkeypatch, synthetic_dir):
    """Run in a temp folder so mlruns/ (MLflow + Optuna SQLite) lands there, not in the repository."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path


@pytest.mark.parametrize("engine", ["optuna", "kerastuner"])
def test_search_logs_parent_and_one_child_per_trial(engine, workdir, synthetic_dir, shared_cache):
    assert main(search_argv(synthetic_dir, shared_cache, engine, 2, f"t-{engine}")) == 0
    runs = runs_of(f"t-{engine}")
    parents = [r for r in runs if r.data.tags.get("pipeline.run_type") == "search"]
    children = [r for r in runs if r.data.tags.get("pipeline.run_type") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.data.params["engine"] == engine and parent.data.params["backbone"] == "mobilenetv2"
    assert parent.data.tags["data_fingerprint"] and parent.data.tags["best_trial"] in {"0", "1"}
    parent_files = {a.path for a in mlflow.MlflowClient().list_artifacts(parent.info.run_id)}
    assert {"trials.csv", "best_trial.json", "data", "search_space"} <= parent_files
    client = mlflow.MlflowClient()
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["status"] == "COMPLETE"
        assert set(PARAMS) <= set(child.data.params)
        assert set(FINAL_METRICS) <= set(child.data.metrics)
        assert 0.0 <= child.data.metrics["val_auc"] <= 1.0
        history = client.get_metric_history(child.info.run_id, "epoch/val_auc")
        assert [m.step for m in history] == list(range(len(history))) and history
        assert GRADCAM_ARTIFACT in {a.path for a in client.list_artifacts(child.info.run_id, "gradcam")}


def test_optuna_resume_after_kill_keeps_finished_trials(workdir, synthetic_dir, shared_cache):
    """Kill a search mid-study; the rerun keeps every finished trial, draws no configuration twice,
    fails the killed trial (heartbeat) and retries it, and leaves nothing RUNNING."""
    argv = search_argv(synthetic_dir, shared_cache, "optuna", 6, "t-resume", "--study-name", "resume-me",
                       "--heartbeat", "1")
    storage = f"sqlite:///{workdir / 'mlruns' / 'optuna.db'}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    log = workdir / "first.log"
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "pipeline", *argv], cwd=workdir, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    finished = []
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
        # touch the storage only once the worker printed finished trials: its tables exist by then
        if len(re.findall(r"^trial\s+\d+/\d+ (?:COMPLETE|PRUNED)", log.read_text(), flags=re.M)) < 2:
            continue
        try:
            study = optuna.load_study(study_name="resume-me", storage=storage)
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # no study yet, or the worker is creating its tables
            continue
        finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
        if len(finished) >= 2 and any(t.state.name == "RUNNING" for t in study.trials):
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(finished) >= 2, "the first search never finished two trials"
    done = ("COMPLETE", "PRUNED")
    before = {t.number: (t.params, t.value) for t in optuna.load_study(study_name="resume-me", storage=storage).trials
              if t.state.name in done}

    with time_limit(900, "the resumed search"):  # a dead trial it waits on must not hang the suite
        assert main(search_argv(synthetic_dir, shared_cache, "optuna", 3 + len(before), "t-resume",
                                "--study-name", "resume-me", "--heartbeat", "1")) == 0
    study = optuna.load_study(study_name="resume-me", storage=storage)
    after = {t.number: (t.params, t.value) for t in study.trials if t.state.name in done}
    assert len(after) == len(before) + 3
    assert all(after[n] == before[n] for n in before)  # finished trials untouched, not repeated
    keys = [tuple(sorted(p.items())) for p, _ in after.values()]
    assert len(set(keys)) == len(keys), "a resumed study replayed a configuration"
    assert not [t for t in study.trials if t.state.name in ("RUNNING", "WAITING")]
    assert not [r for r in runs_of("t-resume") if r.info.status == "RUNNING"]


def test_resuming_with_other_settings_is_refused(workdir, synthetic_dir, shared_cache, capsys):
    assert main(search_argv(synthetic_dir, shared_cache, "optuna", 1, "t-mismatch", "--study-name", "s1")) == 0
    argv = search_argv(synthetic_dir, shared_cache, "optuna", 2, "t-mismatch", "--study-name", "s1")
    argv[argv.index("--epochs") + 1] = "3"
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "'s1'" in err and "epochs" in err and "--study-name" in err
    # a study made with class weights (or before --imbalance existed), resumed under the smote default:
    # the error names the flag that resumes it
    assert main(search_argv(synthetic_dir, shared_cache, "optuna", 1, "t-mismatch", "--study-name", "s2",
                            "--imbalance", "class-weights")) == 0
    capsys.readouterr()
    assert main(search_argv(synthetic_dir, shared_cache, "optuna", 2, "t-mismatch", "--study-name", "s2")) == 2
    err = capsys.readouterr().err
    assert "(imbalance differ)" in err and "--imbalance class-weights to resume it" in err


def test_feature_cache_is_reused_and_invalidated(synthetic_dir, tmp_path, monkeypatch):
    import pipeline.modeling.features as features_module

    data_cfg = DataConfig(data_dir=synthetic_dir, cache_dir=tmp_path)
    pre = PreprocessConfig(image_size=32)
    dataset = load_dataset(data_cfg, pre, progress=False)
    model = ModelConfig("mobilenetv2", "none", 32)
    first = build_features(dataset, model, pre, AugmentConfig(), 1, tmp_path, cam_count=2, progress=False)
    stored = first.directory / "features.npz"
    written = stored.stat().st_mtime_ns

    def no_backbone(*args, **kwargs):
        raise AssertionError("a cached entry must not run the backbone again")

    with monkeypatch.context() as m:
        m.setattr(features_module, "build_backbone", no_backbone)
        again = build_features(dataset, model, pre, AugmentConfig(), 1, tmp_path, cam_count=2, progress=False)
    assert not first.from_cache and again.from_cache and again.key == first.key
    assert stored.stat().st_mtime_ns == written  # read, not rewritten
    assert sorted(p.name for p in (tmp_path / "features").iterdir() if p.is_dir()) == [first.key]  # no .partial left
    assert first.train_views.shape[:2] == (2, len(dataset.split("train")[1]))
    changed = [build_features(dataset, model, pre, AugmentConfig(flip=False), 1, tmp_path, cam_count=2, progress=False),
               build_features(dataset, model, pre, AugmentConfig(), 2, tmp_path, cam_count=2, progress=False)]
    smaller = load_dataset(DataConfig(data_dir=synthetic_dir, cache_dir=tmp_path, max_per_class=4), pre, progress=False)
    changed.append(build_features(smaller, model, pre, AugmentConfig(), 1, tmp_path, cam_count=2, progress=False))
    assert all(not c.from_cache for c in changed)
    assert len({first.key, *(c.key for c in changed)}) == 4


def test_bad_search_space_fails_before_any_work(workdir, synthetic_dir, capsys):
    bad = workdir / "bad.yaml"
    bad.write_text("dense_units: {type: choice, values: [32]}\ndropout: {type: float, low: 0.5, high: 0.1}\n"
                   "l2: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}\nlearning_rate: {type: float, low: 0.001, high: 0.01}\n")
    argv = search_argv(synthetic_dir, workdir / "cache", "optuna", 1, "t-bad")
    argv[argv.index("--space") + 1] = str(bad)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "bad.yaml" in err and "dropout" in err
    assert not (workdir / "cache").exists()  # nothing was decoded or cached


def test_search_without_data_names_the_folder_and_the_ways_out(workdir, capsys):
    assert main(["search", "--data-dir", "no/such/folder", "--weights", "none"]) == 2
    err = capsys.readouterr().err
    assert "no/such/folder" in err and "make data" in err and "DATA_DIR=" in err and "make demo" in err


def test_kerastuner_resume_keeps_every_trial_run_id(workdir, synthetic_dir, shared_cache):
    """trials.csv of a resumed Keras Tuner project names the MLflow run of the trials before the resume too."""
    import pandas as pd

    assert main(search_argv(synthetic_dir, shared_cache, "kerastuner", 1, "t-kt-resume", "--study-name", "kt")) == 0
    assert main(search_argv(synthetic_dir, shared_cache, "kerastuner", 2, "t-kt-resume", "--study-name", "kt")) == 0
    runs = runs_of("t-kt-resume")
    latest = max((r for r in runs if r.data.tags.get("pipeline.run_type") == "search"), key=lambda r: r.info.start_time)
    table = pd.read_csv(mlflow.artifacts.download_artifacts(run_id=latest.info.run_id, artifact_path="trials.csv"))
    children = {r.data.tags["trial_number"]: r.info.run_id for r in runs if r.data.tags.get("pipeline.run_type") == "trial"}
    assert len(table) == 2 and table["run_id"].notna().all()
    assert {str(n): rid for n, rid in zip(table["number"], table["run_id"])} == children


def test_a_search_without_gradcam_images_caches_no_maps(data_cfg, pre_cfg):
    """--gradcam-images 0 is allowed: the feature cache then holds an empty set of conv maps (it crashed)."""
    from pipeline.config import AugmentConfig, ModelConfig
    from pipeline.data.dataset import load_dataset
    from pipeline.modeling.features import build_features

    cfg = data_cfg()
    dataset = load_dataset(cfg, pre_cfg, progress=False)
    features = build_features(dataset, ModelConfig("mobilenetv2", "none", pre_cfg.image_size), pre_cfg,
                              AugmentConfig(), 0, cfg.cache_dir, seed=0, cam_count=0, progress=False)
    assert features.cam_maps.shape[0] == 0 and features.val.shape[0] == len(dataset.split("val")[0])
