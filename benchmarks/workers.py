"""Workers on one study: trials per minute with 1 and 2 workers on SQLite and on PostgreSQL, at the same
total thread count, and what the storages cost per trial.

1. Throughput: `python -m pipeline search --workers W` (the real command) on a warm feature cache;
   trials/min = trials / (last trial run's end - first one's start), read from MLflow, so TensorFlow's
   start-up is left out; wall time (start-up included) is shown too. W=1 gets all cores as threads,
   W=2 half each (what --workers gives them), so the total stays the same.
2. Storage overhead per trial, in ms: one process runs trials whose objective does nothing but the
   storage calls a real trial makes (Optuna: ask, 4 suggestions, a report per epoch, 3 user attrs,
   tell, heartbeats, the budget check; MLflow: a child run with 4 params, 5 tags, a metric per epoch
   and 8 final metrics, one small artifact), against SQLite files and against PostgreSQL / an
   `mlflow server` on PostgreSQL. The MLflow server's request count per trial is measured too.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from pipeline.infra import servers, tracking  # noqa: E402

ENV = {"PYTHONPATH": str(REPO), "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}


def search_argv(a, cache: Path, storage: str, study: str, workers: int) -> list[str]:
    return [sys.executable, "-m", "pipeline", "search", "--data-dir", a.data_dir, "--cache-dir", str(cache),
            "--max-per-class", str(a.per_class), "--image-size", str(a.image_size), "--backbone", "mobilenetv2",
            "--weights", "none", "--epochs", str(a.epochs), "--trials", str(a.trials), "--space",
            str(REPO / "search_spaces" / "smoke.yaml"), "--augment-views", "1", "--gradcam-images", "2",
            "--experiment", "bench-workers", "--study-name", study, "--storage", storage,
            "--workers", str(workers)]


def throughput(a, work: Path, cache: Path, storage: str, label: str, workers: int) -> dict:
    import mlflow

    uri = f"sqlite:///{work / f'mlflow-{label}-{workers}.db'}"
    env = {**os.environ, **ENV, "MLFLOW_TRACKING_URI": uri}
    if workers == 1:  # the same total thread count as 2 workers x half the cores
        cores = len(os.sched_getaffinity(0))
        env.update({"TF_NUM_INTRAOP_THREADS": str(cores), "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": str(cores)})
    start = time.perf_counter()
    subprocess.run(search_argv(a, cache, storage, f"bench-{label}-{workers}", workers), cwd=work, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name("bench-workers")
    runs = [r for r in mlflow.search_runs([exp.experiment_id], output_format="list")
            if r.data.tags.get(tracking.RUN_TYPE) == "trial"]
    span = (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
    return {"storage": label, "workers": workers, "trials": len(runs), "trial_span_s": span,
            "trials_per_min": 60 * len(runs) / span, "wall_s": wall}


def optuna_overhead(url: str, trials: int, epochs: int) -> float:
    """ms per trial of storage traffic alone, as the search's Optuna loop makes it."""
    import optuna

    from pipeline.search.optuna_study import _counts, _per_trial_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = tracking.optuna_storage(url, heartbeat=10)
    study = optuna.create_study(study_name=f"overhead-{time.time_ns()}", storage=storage, direction="maximize",
                                sampler=_per_trial_sampler(0))

    def objective(trial):
        trial.set_user_attr("worker", "bench")
        trial.set_user_attr("mlflow_parent_run_id", "x" * 32)
        x = [trial.suggest_categorical("dense_units", [16, 32]), trial.suggest_float("dropout", 0.1, 0.5),
             trial.suggest_float("l2", 1e-5, 1e-3, log=True), trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True)]
        trial.set_user_attr("mlflow_run_id", "y" * 32)
        for epoch in range(epochs):
            trial.report(x[1], epoch)
            trial.should_prune()
        return x[1]

    start = time.perf_counter()
    for _ in range(trials):
        tracking.fail_stale_trials(study)
        _counts(study)
        study.optimize(objective, n_trials=1)
    return 1000 * (time.perf_counter() - start) / trials


def mlflow_overhead(uri: str, trials: int, epochs: int) -> float:
    """ms per trial of MLflow traffic alone, as TrialRunner logs a trial."""
    import mlflow

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(f"overhead-{time.time_ns()}")
    png = b"\x89PNG" + os.urandom(60_000)  # about the size of a trial's Grad-CAM grid
    with tempfile.TemporaryDirectory() as tmp, mlflow.start_run():
        Path(tmp, "val_grid.png").write_bytes(png)
        start = time.perf_counter()
        for n in range(trials):
            with mlflow.start_run(nested=True, tags={tracking.RUN_TYPE: "trial", "trial_number": str(n), "engine": "optuna",
                                                     "study_name": "s", "worker.host": "h", "worker.pid": "1"}):
                mlflow.log_params({"dense_units": 32, "dropout": 0.2, "l2": 1e-4, "learning_rate": 1e-3})
                for epoch in range(epochs):
                    mlflow.log_metrics({f"epoch/{k}": 0.5 for k in ("loss", "auc", "val_loss", "val_auc")}, step=epoch)
                mlflow.log_metrics({k: 0.5 for k in ("val_auc", "val_accuracy", "val_precision", "val_recall", "val_f1",
                                                     "val_loss", "duration_s", "epochs_run")})
                mlflow.log_artifact(str(Path(tmp, "val_grid.png")), "gradcam")
                mlflow.log_metric("gradcam_s", 0.1)
                mlflow.set_tag("status", "COMPLETE")
        return 1000 * (time.perf_counter() - start) / trials


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data-dir", default="data/chest_xray", help="dataset root with train/ and test/")
    p.add_argument("--per-class", type=int, default=30, help="--max-per-class of the searches")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--trials", type=int, default=4, help="trials per throughput run")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--overhead-trials", type=int, default=15, help="trials of the storage-only measurement")
    a = p.parse_args()
    a.data_dir = str(Path(a.data_dir).resolve())
    work = Path(tempfile.mkdtemp(prefix="bench-workers-"))
    pg_dir = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    cache = work / "cache"
    pg, server = None, None
    try:
        if servers.postgres_bindir() is not None:
            pg = servers.start_postgres(pg_dir, servers.free_port())
        else:
            print("PostgreSQL binaries missing: PostgreSQL rows skipped (apt-get install -y postgresql)")
        backends = {"sqlite": f"sqlite:///{work / 'optuna.db'}", **({"postgresql": f"{pg}/optuna"} if pg else {})}
        # warm the feature cache once, so the runs below time trials, not the backbone
        subprocess.run([*search_argv(a, cache, backends["sqlite"], "warm-up", 1)[:-2], "--trials", "1"], cwd=work,
                       env={**os.environ, **ENV, "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'warm.db'}"},
                       check=True, stdout=subprocess.DEVNULL)
        rows = [throughput(a, work, cache, url, label, w) for label, url in backends.items() for w in (1, 2)]
        print(f"\nthroughput: {a.trials} trials, --max-per-class {a.per_class}, {a.image_size} px, {a.epochs} epochs, "
              f"{len(os.sched_getaffinity(0))} cores in all")
        print(f"{'storage':12s} {'workers':>7s} {'trials/min':>10s} {'trial span s':>12s} {'wall s':>7s}")
        for r in rows:
            print(f"{r['storage']:12s} {r['workers']:7d} {r['trials_per_min']:10.1f} {r['trial_span_s']:12.1f} "
                  f"{r['wall_s']:7.1f}")

        print(f"\nstorage overhead per trial ({a.overhead_trials} trials, {a.epochs} epochs each):")
        print(f"  Optuna, SQLite:              {optuna_overhead(backends['sqlite'], a.overhead_trials, a.epochs):7.1f} ms")
        if pg:
            print(f"  Optuna, PostgreSQL:          {optuna_overhead(backends['postgresql'], a.overhead_trials, a.epochs):7.1f} ms")
        sqlite_ms = mlflow_overhead(f"sqlite:///{work / 'overhead.db'}", a.overhead_trials, a.epochs)
        print(f"  MLflow, SQLite file:         {sqlite_ms:7.1f} ms")
        if pg:
            port = servers.free_port()
            log = work / "mlflow-server.log"
            server = servers.start_mlflow_server(f"{pg}/mlflow", str(work / "artifacts"), port, log=log)
            before = log.read_text().count('HTTP/1.1"')
            ms = mlflow_overhead(f"http://127.0.0.1:{port}", a.overhead_trials, a.epochs)
            time.sleep(1)
            requests = (log.read_text().count('HTTP/1.1"') - before) / a.overhead_trials
            shown = f", {requests:.0f} HTTP requests" if requests else ""
            print(f"  MLflow, server on PostgreSQL: {ms:7.1f} ms{shown}")
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGKILL)  # uvicorn and its job runner
            server.wait(timeout=30)
        if pg:
            servers.stop_postgres(pg_dir)
        shutil.rmtree(pg_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
