"""No patient data leaves a DICOM file: data-check, a search, retrain-best, evaluate, predict and the pyfunc on base64
bytes run on DICOM twins of real films whose headers hold distinctive fake values, then every byte they wrote (the
MLflow folder with its SQLite file, the cache, outputs, HOME, and what they printed) is searched for those values."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.preprocess import read_image, to_gray_uint8
from tests.helpers import DICOM_TWINS, FAKE_HEADER, REPO, RETRAIN_ARGV, search_argv, write_dicom

REAL_TRAIN = REPO.parent / "shared" / "data" / "chest_xray" / "train"
PER_CLASS = {"train": 16, "test": 6}  # the synthetic sets' sizes: enough for a patient-grouped val split

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not REAL_TRAIN.is_dir(), reason=f"real training films not found at {REAL_TRAIN}")]


def _needles() -> list[bytes]:
    """Every fake value, its name parts and its dates in ISO form too, lower-cased (the haystack is lower-cased)."""
    values = set(FAKE_HEADER.values())
    for value in FAKE_HEADER.values():
        values |= {part for part in value.split("^") if len(part) >= 6}  # shorter ones occur by chance in binaries
        if value.isdigit() and len(value) == 8:
            values.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    values -= {"PATIENT"}  # a common word; the full name and TESTNAME stay in the list
    return sorted(v.lower().encode() for v in values)


def _dicom_dataset(root: Path) -> Path:
    """train/ and test/ of DICOM twins of real films, every kind of twin, half of them without a suffix, and two
    files that are refused (a multi-frame object and a report without pixels) carrying the same header."""
    kinds = sorted(DICOM_TWINS)
    count = 0
    for cls in ("NORMAL", "PNEUMONIA"):
        films = sorted((REAL_TRAIN / cls).glob("*.jpeg"))[:PER_CLASS["train"] + PER_CLASS["test"]]
        for i, film in enumerate(films):
            split = "train" if i < PER_CLASS["train"] else "test"
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            make, keywords = DICOM_TWINS[kinds[count % len(kinds)]]
            name = f"film_{count:03d}" + (".dcm" if count % 2 else "")
            write_dicom(folder / name, make(to_gray_uint8(read_image(film))), **keywords)
            count += 1
    gray = to_gray_uint8(read_image(sorted((REAL_TRAIN / "NORMAL").glob("*.jpeg"))[0]))
    write_dicom(root / "train" / "NORMAL" / "multi.dcm", np.stack([gray, gray]))
    write_dicom(root / "train" / "NORMAL" / "report.dcm", gray).write_bytes(_without_pixels(root))
    return root


def _without_pixels(root: Path) -> bytes:
    import io

    import pydicom

    ds = pydicom.dcmread(root / "train" / "NORMAL" / "report.dcm")
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _found(data: bytes, needles: list[bytes]) -> list[bytes]:
    data = data.lower()
    return [n for n in needles if n in data]


def test_no_header_value_is_written_anywhere(tmp_path):
    data, work, home = _dicom_dataset(tmp_path / "dicom_xray"), tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    needles = _needles()
    sources = [p.read_bytes() for p in data.rglob("*") if p.is_file()]
    # the control: every value really is in the source files, and the scan below would see it there
    in_files = [n for n in needles if b"-" not in n or not n[:4].isdigit()]  # all but the ISO dates made up here
    assert len(in_files) >= len(FAKE_HEADER) and all(any(n in s.lower() for s in sources) for n in in_files), \
        "fake header values missing from the files"

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(HOME=str(home), MLFLOW_DISABLE_TELEMETRY="true", PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2")
    printed = []

    def run(*commands: list[str], code: str = "") -> str:
        """The commands in one Python process (TensorFlow is imported once), as `python -m pipeline` runs them."""
        script = ("import json, sys\nfrom pipeline.cli import main\nfor argv in json.loads(sys.argv[1]):\n"
                  "    assert main(argv) == 0, argv\n" + code)
        result = subprocess.run([sys.executable, "-c", script, json.dumps(commands)], cwd=work, env=env,
                                capture_output=True, text=True, timeout=840)
        printed.append(result.stdout + result.stderr)
        assert result.returncode == 0, (commands, result.stdout[-3000:], result.stderr[-3000:])
        return result.stdout

    cache = work / ".cache"
    check = run(["-v", "data-check", "--data-dir", str(data), "--cache-dir", str(cache), "--image-size", "32"])
    assert "multi-frame DICOM (2 frames)" in check and "DICOM without pixel data (Basic Text SR Storage)" in check
    totals = [int(line.rsplit("total=", 1)[1]) for line in check.splitlines() if "total=" in line]
    assert sum(totals) == 2 * sum(PER_CLASS.values())  # every twin, of every kind and name, is used
    run(search_argv(data, cache, "optuna", 1, "dicom-privacy"),
        [*RETRAIN_ARGV, "--experiment", "dicom-privacy", "--model-name", "dicom", "--fine-tune-epochs", "0"])
    outputs = work / "outputs"
    film = sorted((data / "test" / "PNEUMONIA").iterdir())[0]
    served = run(["-v", "evaluate", "--model", "models:/dicom/1", "--data-dir", str(data / "test"), "--experiment",
                  "dicom-privacy"],
                 ["-v", "predict", "--model", "models:/dicom/1", "--output", str(outputs), str(data / "test")],
                 code="import base64, pandas as pd, mlflow.pyfunc\n"  # what the served model runs on base64 bytes
                      f"frame = pd.DataFrame({{'image': [base64.b64encode(open({str(film)!r}, 'rb').read()).decode()]}})\n"
                      "print(mlflow.pyfunc.load_model('models:/dicom/1').predict(frame).to_csv(index=False))\n")
    assert "probability,label" in served

    written = {p: p.read_bytes() for folder in (work, home) for p in folder.rglob("*") if p.is_file()}
    # the controls: the scan covers the SQLite store, the logged predictions, the cache and the overlays
    names = {p.name for p in written}
    assert {"mlflow.db", "predictions.csv"} <= names, sorted(names)[:40]
    assert any(p.suffix == ".npy" for p in written) and len(list(outputs.glob("*_gradcam.png"))) == 12
    leaks = {str(p): _found(b, needles) for p, b in written.items() if _found(b, needles)}
    leaks.update({f"printed by command {i}": _found(t.encode(), needles) for i, t in enumerate(printed)
                  if _found(t.encode(), needles)})
    assert not leaks, f"header values written: {leaks}"
