"""The servers a multi-machine study needs, started by the project: a local PostgreSQL cluster
(Optuna storage and MLflow backend store) and `mlflow server` in front of it.

`python -m pipeline.servers postgres` (make postgres) and `python -m pipeline.servers mlflow`
(make server); the tests start throwaway ones through the same functions.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline.config import ConfigError, PipelineError, sqlite_folder

PG_USER = "pipeline"  # the cluster's superuser; trust authentication, listening on 127.0.0.1 only
DATABASES = ("optuna", "mlflow")
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


class ServerError(PipelineError, RuntimeError):
    """A server could not be installed or started; the message says what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bindir(install: bool = False) -> Path | None:
    """Where initdb and pg_ctl live (Debian puts them outside PATH); apt-get installs them if asked."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")) or [shutil.which("pg_ctl") or ""]
    if found[-1]:
        return Path(found[-1]).parent
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], check=True, env=env)
        return postgres_bindir(install=False)
    return None


def _as_owner(argv: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run its programs as the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv


def start_postgres(folder: Path, port: int, install: bool = False) -> str:
    """Create (first time) and start a cluster in `folder` on 127.0.0.1:port with the databases
    `optuna` and `mlflow`; returns the server URL without a database name."""
    bindir = postgres_bindir(install)
    if bindir is None:
        raise ServerError("PostgreSQL server binaries (initdb, pg_ctl) not found: install the OS package "
                          "`postgresql` (apt-get install -y postgresql), or run `make postgres` as root to have it "
                          "installed")
    folder = Path(folder).resolve()
    data, log = folder / "data", folder / "server.log"
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        subprocess.run(_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--auth=trust",
                                  "-E", "UTF8"]), check=True, stdout=subprocess.DEVNULL)
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    running = subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "status"]), capture_output=True)
    if running.returncode == 0:  # started before (make postgres twice): say where it is
        return f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{port}"
    started = subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                                        "-w", "-t", "60", "start"]), capture_output=True, text=True)
    if started.returncode != 0:
        tail = log.read_text()[-2000:] if log.exists() else started.stderr
        raise ServerError(f"PostgreSQL did not start in {data} on port {port}: {tail.strip()}")
    url = f"postgresql+psycopg2://{PG_USER}@127.0.0.1:{port}"  # SQLAlchemy 2.1 would pick psycopg 3
    if fresh:
        for name in DATABASES:
            subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", PG_USER, name],
                           check=True)
    return url


def stop_postgres(folder: Path) -> None:
    bindir = postgres_bindir()
    data = Path(folder).resolve() / "data"
    if bindir is not None and (data / "postmaster.pid").exists():
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                       check=False, stdout=subprocess.DEVNULL)


def mlflow_server_argv(backend_store: str, artifacts: str, port: int) -> list[str]:
    mlflow = Path(sys.executable).with_name("mlflow")
    return [str(mlflow), "server", "--backend-store-uri", backend_store, "--artifacts-destination", artifacts,
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]


def start_mlflow_server(backend_store: str, artifacts: str, port: int, log: Path | None = None,
                        timeout: float = 120) -> subprocess.Popen:
    """`mlflow server` as a child process, returned once /health answers."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    proc = subprocess.Popen(mlflow_server_argv(backend_store, artifacts, port), env={**os.environ, **QUIET},
                            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"mlflow server exited with status {proc.returncode}" + (f"; see {log}" if log else ""))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as reply:
                if reply.status == 200:
                    return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise ServerError(f"mlflow server did not answer on port {port} within {timeout:.0f} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.servers", description=__doc__)
    sub = p.add_subparsers(dest="server", required=True)
    pg = sub.add_parser("postgres", help="create and start a local PostgreSQL cluster; prints the STORAGE URL")
    pg.add_argument("--dir", default=".pg", help="cluster folder (default: %(default)s)")
    pg.add_argument("--port", type=int, default=5433, help="(default: %(default)s)")
    pg.add_argument("--stop", action="store_true", help="stop the cluster instead")
    ml = sub.add_parser("mlflow", help="run `mlflow server` in the foreground")
    ml.add_argument("--backend-store", default="sqlite:///mlruns/mlflow.db", help="(default: %(default)s)")
    ml.add_argument("--artifacts", default="mlruns/artifacts", help="(default: %(default)s)")
    ml.add_argument("--port", type=int, default=5050, help="(default: %(default)s)")
    a = p.parse_args(argv)
    try:
        if a.server == "postgres" and a.stop:
            stop_postgres(Path(a.dir))
            print(f"PostgreSQL in {a.dir} stopped")
        elif a.server == "postgres":
            url = start_postgres(Path(a.dir), a.port, install=True)
            print(f"PostgreSQL running in {Path(a.dir).resolve()} (log: {a.dir}/server.log)")
            print(f"STORAGE={url}/optuna")
            print(f"BACKEND_STORE={url}/mlflow")
        else:
            if sqlite_folder(a.backend_store):
                sqlite_folder(a.backend_store).mkdir(parents=True, exist_ok=True)
            if "://" not in a.artifacts:
                Path(a.artifacts).mkdir(parents=True, exist_ok=True)
            print(f"MLflow server on http://127.0.0.1:{a.port} (backend {a.backend_store}, artifacts {a.artifacts});"
                  f" workers: export MLFLOW_TRACKING_URI=http://127.0.0.1:{a.port}", flush=True)
            os.execve(mlflow_server_argv(a.backend_store, a.artifacts, a.port)[0],
                      mlflow_server_argv(a.backend_store, a.artifacts, a.port), {**os.environ, **QUIET})
    except (PipelineError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as err:
        print(f"error: {' '.join(map(str, err.cmd))} failed with status {err.returncode}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
