"""Helpers the test modules share (fixtures live in conftest.py): command lines and paths, one home each."""
from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SMOKE_SPACE = str(REPO / "search_spaces" / "smoke.yaml")
RETRAIN_ARGV = ["retrain-best", "--experiment", "t-registry", "--epochs", "1", "--fine-tune-epochs", "1",
                "--fine-tune-layers", "all", "--gradcam-images", "4"]


def search_argv(data_dir: Path, cache: Path, engine: str, trials: int, experiment: str, *extra: str) -> list[str]:
    """The smallest real search: 32 px MobileNetV2 from a random start, the smoke space, 2 epochs per trial."""
    return ["search", "--data-dir", str(data_dir), "--cache-dir", str(cache), "--engine", engine,
            "--trials", str(trials), "--epochs", "2", "--backbone", "mobilenetv2", "--weights", "none",
            "--image-size", "32", "--space", SMOKE_SPACE, "--experiment", experiment, "--augment-views", "1",
            "--gradcam-images", "4", *extra]


def runs_of(experiment: str):
    import mlflow

    exp = mlflow.get_experiment_by_name(experiment)
    return mlflow.search_runs([exp.experiment_id], output_format="list")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(port: int, payload: dict, path: str = "/invocations") -> dict:
    import json
    import urllib.request

    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def http_server(argv: list[str], port: int, folder: Path, env: dict, timeout_s: float = 240):
    """A real server process in its own process group (its workers too): waits for /ping, yields the process,
    then stops the whole group. The log is folder/server.log; a server that dies early fails with its tail."""
    import os
    import signal
    import subprocess
    import time
    import urllib.request

    log_path = folder / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(argv, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5):
                    break
            except OSError:
                assert server.poll() is None, log_path.read_text()[-3000:]
                assert time.time() < deadline, f"server did not come up in {timeout_s:.0f} s"
                time.sleep(2)
        yield server
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def serve_env(tracking_uri: str) -> dict:
    """What `make serve` runs with: the venv's bin/ on PATH (mlflow starts `uvicorn` through the shell)."""
    import os
    import sys

    bin_dir = Path(sys.executable).parent
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}


@contextlib.contextmanager
def mlflow_models_serve(model_uri: str, tracking_uri: str, folder: Path, timeout_s: float = 240):
    """`mlflow models serve` as a real process on a free port; yields the port."""
    import sys

    port = free_port()
    argv = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]
    with http_server(argv, port, folder, serve_env(tracking_uri), timeout_s):
        yield port


# Distinctive fake header values: tests write them into DICOM files and look for them in everything a run writes.
FAKE_HEADER = {"PatientName": "PATIENT^TESTNAME", "PatientID": "PID-7731", "PatientBirthDate": "19480314",
               "StudyDate": "20010911", "SeriesDate": "20020412", "AcquisitionDate": "20030517",
               "AccessionNumber": "ACC-55213", "InstitutionName": "Test Institution 42",
               "ReferringPhysicianName": "DR^QZXREFERRER^JO"}


def write_dicom(path: Path, stored, photometric: str = "MONOCHROME2", bits_stored: int | None = None,
                transfer_syntax=None, **elements) -> Path:
    """A single-frame CR file of `stored` (2-D uint8/uint16 stored values) with the fake patient header, the
    DICM preamble and any further elements (WindowCenter=..., VOILUTSequence=...); `transfer_syntax` compresses."""
    import numpy as np
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    stored = np.ascontiguousarray(stored)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "CR"
    for key, value in {**FAKE_HEADER, **elements}.items():
        setattr(ds, key, value)
    bits = bits_stored or stored.dtype.itemsize * 8
    ds.set_pixel_data(stored, photometric_interpretation=photometric, bits_stored=bits)
    if transfer_syntax is not None:
        ds.compress(transfer_syntax)
    ds.save_as(path, enforce_file_format=True)
    return path


def _voi_lut_sequence():
    """A 12-bit -> 16-bit VOI LUT that undoes the x16 of the 12-bit twin (each entry (x // 16) * 257)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.add_new(0x00283002, "US", [4096, 0, 16])  # LUT Descriptor: entries, first mapped value, bits
    item.add_new(0x00283006, "US", [int((x // 16) * 257) for x in range(4096)])  # LUT Data
    return Sequence([item])


# DICOM twins of an 8-bit gray film: kind -> (its stored values from the film, write_dicom keywords);
# each must read back as the film itself
DICOM_TWINS = {
    "monochrome2_8bit": (lambda g: g, {}),
    "monochrome1_8bit": (lambda g: 255 - g, {"photometric": "MONOCHROME1"}),
    "12bit_window": (lambda g: g.astype(np.uint16) * 16, {"bits_stored": 12, "WindowCenter": 2040.5, "WindowWidth": 4081}),
    "12bit_window_monochrome1": (lambda g: 4080 - g.astype(np.uint16) * 16,
                                 {"photometric": "MONOCHROME1", "bits_stored": 12, "WindowCenter": 2040.5,
                                  "WindowWidth": 4081}),
    # Modality LUT (rescale) first, then a LINEAR_EXACT window given in rescaled units
    "16bit_rescale_window": (lambda g: g.astype(np.uint16) * 257,
                             {"RescaleSlope": 0.5, "RescaleIntercept": -1000, "VOILUTFunction": "LINEAR_EXACT",
                              "WindowCenter": -1000 + 32767.5 / 2, "WindowWidth": 32767.5}),
    # the LUT wins over the (contradicting, much narrower) window, as PS3.3 C.11.2 and apply_voi_lut say
    "12bit_voi_lut_sequence": (lambda g: g.astype(np.uint16) * 16,
                               {"bits_stored": 12, "VOILUTSequence": _voi_lut_sequence(), "WindowCenter": 100,
                                "WindowWidth": 50}),
    "12bit_window_rle_compressed": (lambda g: g.astype(np.uint16) * 16,
                                    {"bits_stored": 12, "WindowCenter": 2040.5, "WindowWidth": 4081,
                                     "transfer_syntax": "1.2.840.10008.1.2.5"}),  # RLE Lossless
}


class Expired(BaseException):
    """Not an Exception, so that no `except Exception` on the way (Optuna's catch=) can swallow it."""


@contextlib.contextmanager
def time_limit(seconds: int, what: str):
    """Fail a step that would wait forever (a resumed search waiting on a dead trial) instead of hanging the suite."""
    import signal

    def expired(signum, frame):
        raise Expired(f"{what} took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
