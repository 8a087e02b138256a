"""Helpers the test modules share (fixtures live in conftest.py): command lines and paths, one home each."""
from __future__ import annotations

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
