"""Bad input and Ctrl-C at the command line: one `error:` / `interrupted:` line first, naming the value and
the way out, exit 2 / 130, and no traceback. Add a case here with every new flag."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from tests.helpers import REPO, search_argv

SEED_LIMIT = "a whole number from 0 to 4294967295 (--seed)"


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder to run in, with a file where folders are expected and a malformed search space."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "bad.yaml").write_text("dense_units:\n  type: choice\n  values: [8, 16\nl2: {\n")
    return tmp_path


def _first_line(capsys) -> tuple[str, str]:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err.splitlines()[0] if err else "", err


# (argv after the command, exact first line of stderr); {data} is the synthetic data set, {cwd} the run folder.
CASES = [
    (["data-check", "--seed", "-1"], f"error: seed=-1 is invalid: expected {SEED_LIMIT}"),
    (["search", "--data-dir", "{data}", "--seed", "4294967296"], f"error: seed=4294967296 is invalid: expected {SEED_LIMIT}"),
    (["search", "--data-dir", "{data}", "--storage", "notaurl"],
     "error: storage='notaurl' is not a database URL: expected e.g. sqlite:///mlruns/optuna.db or "
     "postgresql+psycopg2://user:pass@host/db (--storage)"),
    (["search", "--data-dir", "{data}", "--storage", "sqlite:///a-file/optuna.db"],
     "error: the folder of --storage a-file is a file, not a folder: remove it or choose another --storage"),
    (["data-check", "--data-dir", "{data}", "--cache-dir", "a-file"],
     "error: --cache-dir a-file is a file, not a folder: remove it or choose another --cache-dir"),
    (["search", "--data-dir", "{data}", "--cache-dir", "a-file/cache"],
     "error: --cache-dir a-file/cache cannot be made because a-file is a file, not a folder: remove it or choose "
     "another --cache-dir"),
    (["search", "--data-dir", "{data}", "--space", "bad.yaml"],
     "error: bad.yaml: not valid YAML at line 4 column 3: expected ',' or ']', but got ':'"),
    (["search", "--data-dir", "{data}", "--metric", "val_precision"],
     "error: metric='val_precision' is invalid: expected one of val_auc, val_f1, val_accuracy, val_loss"),
    (["predict", "--model", "runs:/0123/model", "x.png"],
     "error: model='runs:/0123/model' is invalid: expected models:/NAME@ALIAS (e.g. "
     "models:/pneumonia-classifier@champion) or models:/NAME/VERSION (--model)"),
    (["predict", "--model", "models:/pneumonia-classifier", "x.png"],
     "error: model='models:/pneumonia-classifier' is invalid: expected models:/NAME@ALIAS (e.g. "
     "models:/pneumonia-classifier@champion) or models:/NAME/VERSION (--model)"),
    (["evaluate", "--model", "pneumonia-classifier@champion", "--data-dir", "{data}"],
     "error: model='pneumonia-classifier@champion' is invalid: expected models:/NAME@ALIAS (e.g. "
     "models:/pneumonia-classifier@champion) or models:/NAME/VERSION (--model)"),
    (["predict", "--output", "a-file", "x.png"],
     "error: --output a-file is a file, not a folder: remove it or choose another --output"),
    (["pretrain", "--data-dir", "{data}", "--label-smoothing", "0.9"],
     "error: label_smoothing=0.9 is invalid: expected a number in [0.0, 0.5]"),
    (["pretrain", "--data-dir", "{data}", "--epochs", "3", "--warmup-epochs", "5"],
     "error: warmup_epochs=5 is invalid: expected fewer than --epochs"),
    (["search", "--data-dir", "{data}", "--brightness", "0.7"],
     "error: brightness=0.7 is invalid: expected a number in [0.0, 0.5]"),
    (["search", "--data-dir", "{data}", "--crop", "0.2"],
     "error: crop=0.2 is invalid: expected 0 (off) or a share of the area from 0.3 to below 1 (--crop)"),
    (["retrain-best", "--tta", "rotate"], "error: tta='rotate' is invalid: expected one of auto, none, flip, flip-crops "
                                          "(--tta)"),
    (["retrain-best", "--top-k", "0"], "error: top_k=0 is invalid: expected an integer from 1 to 10 (--top-k)"),
    (["retrain-best", "--top-k", "2", "--seeds", "3"],
     "error: seeds=3 is invalid: expected 1 when --top-k is above 1 (--seeds): an ensemble is the K best trials or "
     "one trial with N seeds, so drop one of the two flags"),
    (["data-check", "--data-dir", "no-such-folder"], "error: no dataset at no-such-folder (looked in {cwd}/no-such-folder)."),
]


@pytest.mark.parametrize("argv, first_line", CASES, ids=[" ".join(a[:1] + a[-2:]) for a, _ in CASES])
def test_bad_value_is_one_error_line_and_exit_2_before_any_work(argv, first_line, workdir, synthetic_dir, capsys):
    fill = {"data": str(synthetic_dir), "cwd": str(workdir)}
    assert main([part.format(**fill) for part in argv]) == 2
    line, err = _first_line(capsys)
    assert line == first_line.format(**fill), err
    # refused at the edge: nothing was started, so nothing was written where the command runs
    assert sorted(p.name for p in workdir.iterdir()) == ["a-file", "bad.yaml"]


def test_malformed_yaml_gives_the_detail_after_the_summary(workdir, synthetic_dir, capsys):
    main(["search", "--data-dir", str(synthetic_dir), "--space", "bad.yaml"])
    _, err = _first_line(capsys)
    assert '  while parsing a flow sequence\n    in "bad.yaml", line 3, column 11' in err


@pytest.mark.parametrize("argv, first_line", [
    (["search", "--seed", "abc"], "error: argument --seed: invalid int value: 'abc' (see python -m pipeline search --help)"),
    (["promote", "--margin", "x"], "error: argument --margin: invalid float value: 'x' (see python -m pipeline promote --help)"),
    (["serach"], "error: argument command: invalid choice: 'serach'"),
    ([], "error: the following arguments are required: command (see python -m pipeline --help)"),
])
def test_flag_that_does_not_parse_is_one_error_line(argv, first_line, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(first_line) and len(err.splitlines()) == 1, err


@pytest.mark.slow
def test_weights_file_of_another_architecture_is_one_line_naming_file_and_backbone(workdir, synthetic_dir, capsys):
    import keras

    wrong = workdir / "wrong.weights.h5"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save_weights(wrong)
    argv = search_argv(synthetic_dir, workdir / "cache", "optuna", 1, "t-weights")
    assert main([*argv, "--weights", str(wrong)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.split("error: ", 1)[1].splitlines()  # checked before any image is decoded
    # a Dense layer in the file: refused by name, before Keras is even asked to load it
    assert lines[0].startswith(f"weights file {wrong} does not fit backbone mobilenetv2 without its top: "), err
    assert "(dense)" in lines[0] and "saved with its top or from another model" in lines[0], err
    assert "decode" not in err.split("error: ", 1)[0], "the file is checked before any image is decoded"
    assert len(lines) <= 8 and all(len(line) < 320 for line in lines), "Keras's detail is cut short"


def _catches_sigint(pid: int) -> bool:
    """True once Python has installed its SIGINT handler in the process (earlier, Ctrl-C just kills it)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGINT - 1)))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the signal mask from /proc")
@pytest.mark.parametrize("command", ["data-check", "search"])
def test_ctrl_c_while_starting_is_one_line_and_exit_130(command, tmp_path, synthetic_dir):
    """A real SIGINT while the command imports its libraries (pandas, scikit-learn, TensorFlow), the
    moment a user is most likely to give up on a slow start."""
    env = {k: v for k, v in os.environ.items() if k != "TMPDIR"}
    env.update(PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", command, "--data-dir", str(synthetic_dir),
                             "--cache-dir", str(tmp_path / "cache"), "--image-size", "32",
                             *(["--space", str(REPO / "search_spaces" / "smoke.yaml")] if command == "search" else [])],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    started = tmp_path / ".cache" / "tmp"  # made by `python -m pipeline` first thing, inside its Ctrl-C handling
    deadline = time.monotonic() + 60
    while not (started.is_dir() and _catches_sigint(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # into the imports
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.startswith("interrupted: ") and len(err.splitlines()) == 1, err
    assert "Traceback" not in err and out == ""
