"""`search --workers N`: N worker processes on one Optuna study on this machine, each with its share of the cores.

Each worker is the ordinary single-process search (`--workers 1`), so a worker started by hand on
another machine with the same --storage and --study-name joins the same study the same way.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager

from pipeline.config import ConfigError, Interrupted
from pipeline.infra import tracking


class _Stop:
    deferred = False  # inside the trial loop: stop at the next safe point instead of at once
    requested = False


def _on_signal(signum, frame):
    if _Stop.deferred and not _Stop.requested:
        _Stop.requested = True  # a second Ctrl-C stops at once
        return
    raise KeyboardInterrupt


def install_stop_handlers() -> None:
    """Ctrl-C and SIGTERM (a scheduler stopping a worker) take the same clean-up path. Inside the trial
    loop they stop at the next epoch end or between trials: a KeyboardInterrupt raised while
    TensorFlow traces a graph leaves it unusable for every later trial."""
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)


@contextmanager
def deferred_stop():
    _Stop.deferred = True
    try:
        yield
    finally:
        _Stop.deferred = False


def check_stop() -> None:
    """Raise KeyboardInterrupt here, at a safe point, if a stop was asked for."""
    if _Stop.requested:
        raise KeyboardInterrupt


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


WORKERS_PER_CORE = 4  # past this, workers only wait on each other (each one is a whole TensorFlow process)


def max_workers() -> int:
    return WORKERS_PER_CORE * cores()


def check_workers(workers: int) -> None:
    """Refuse a worker count this machine cannot run before any process is started (--workers 100000 forked
    until the machine stalled)."""
    if workers < 1:
        raise ConfigError(f"--workers {workers} is invalid: expected an integer >= 1")
    if workers > max_workers():
        raise ConfigError(f"--workers {workers} is more than this machine can run: at most {max_workers()} "
                          f"({WORKERS_PER_CORE} per core, {cores()} cores); use --workers {max_workers()} or fewer, "
                          "and start more workers on other machines with the same --storage and --study-name")


def thread_env(workers: int) -> dict[str, str]:
    """Threads for one of `workers` processes: TensorFlow and OpenMP share the cores instead of each
    process starting one thread per core (N x cores threads fighting over the same cores)."""
    share = str(max(1, cores() // workers))
    return {"TF_NUM_INTRAOP_THREADS": share, "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": share}


def worker_argv(args: argparse.Namespace, parser: argparse.ArgumentParser) -> list[str]:
    """The same search command line, as one worker (`--workers 1`)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["search"]
    argv = ["-v"] if getattr(args, "verbose", False) else []
    argv.append("search")
    for action in sub._actions:
        if not action.option_strings or action.dest in ("help", "workers"):
            continue
        value, flag = getattr(args, action.dest), max(action.option_strings, key=len)
        if isinstance(action, argparse._StoreConstAction):  # --json, --no-flip: given when set to its constant
            argv += [flag] if value == action.const else []
        elif value is not None:
            argv += [flag, str(value)]
    return argv + ["--workers", "1"]


def _relay(index: int, stream, lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            sys.stdout.write(f"[w{index}] {line}")
            sys.stdout.flush()


def run_workers(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Start the workers, relay their output line by line (one line per finished trial among it),
    wait for all; non-zero if any failed."""
    check_workers(args.workers)
    if args.engine != "optuna":
        raise ConfigError(f"--engine {args.engine} with --workers {args.workers}: Keras Tuner's own distributed "
                          "mode is not supported here (see docs/scaling.md); use --engine optuna for parallel "
                          "workers")

    # Create the MLflow and Optuna tables once, here: workers creating them at the same moment race
    # (SQLite: "Online migration expected to match one row"), and a joiner finds them made.
    tracking.setup(args.experiment)
    tracking.optuna_storage(args.storage, args.heartbeat)
    env = {**os.environ, **thread_env(args.workers), "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "pipeline", *worker_argv(args, parser)]
    print(f"{args.workers} workers on one study, {env['TF_NUM_INTRAOP_THREADS']} thread(s) each "
          f"({cores()} cores)", flush=True)
    lock = threading.Lock()
    procs, relays = [], []
    for i in range(args.workers):
        # its own process group: a terminal's Ctrl-C reaches the supervisor only, which passes on one SIGINT
        # (a worker that got two would stop at once, not at its next safe point)
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True, bufsize=1, process_group=0)
        relay = threading.Thread(target=_relay, args=(i, proc.stdout, lock), daemon=True)
        relay.start()
        procs.append(proc)
        relays.append(relay)
    interrupted = False
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each worker gets one SIGINT from here
        interrupted = True
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        codes = [p.wait() for p in procs]
    for relay in relays:
        relay.join(timeout=5)
    if interrupted or all(code == 130 for code in codes):
        raise Interrupted(f"{args.workers} workers stopped; finished trials are kept in the study; "
                          "the same command resumes")
    failed = [(i, code) for i, code in enumerate(codes) if code != 0]
    for i, code in failed:
        print(f"error: worker w{i} exited with status {code} (its messages are above)", file=sys.stderr)
    return 1 if failed else 0
