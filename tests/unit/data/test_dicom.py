"""DICOM reading: twins of real training films come back as the film, pydicom's own test files are read or refused
with their reason, the scan finds DICOM by name or marker, and no header value reaches a reason or the logs."""
from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pipeline.config import PreprocessConfig
from pipeline.data.dataset import is_image_file, load_dataset, scan
from pipeline.data.dicom import file_problem
from pipeline.data.preprocess import ImageError, decode_bytes, preprocess_array, read_image, to_gray_uint8
from tests.helpers import DICOM_TWINS, FAKE_HEADER, REPO, write_dicom

REAL_TRAIN = REPO.parent / "shared" / "data" / "chest_xray" / "train"
CFG = PreprocessConfig(image_size=64)


@pytest.fixture(scope="module")
def films() -> list[np.ndarray]:
    """Three real training films as the pipeline sees a JPEG: 8-bit gray."""
    if not REAL_TRAIN.is_dir():
        pytest.skip(f"real training films not found at {REAL_TRAIN}")
    paths = sorted((REAL_TRAIN / "NORMAL").glob("*.jpeg"))[:2] + sorted((REAL_TRAIN / "PNEUMONIA").glob("*.jpeg"))[:1]
    return [to_gray_uint8(read_image(p)) for p in paths]


@pytest.mark.parametrize("kind", sorted(DICOM_TWINS))
def test_a_dicom_twin_of_a_real_film_reads_back_as_the_film(films, kind, tmp_path):
    make, keywords = DICOM_TWINS[kind]
    for i, film in enumerate(films):
        stored = make(film)
        assert not np.array_equal(stored, film) or kind == "monochrome2_8bit"  # the control: the file differs
        path = write_dicom(tmp_path / f"{kind}{i}.dcm", stored, **keywords)
        out = read_image(path)
        assert out.dtype == np.uint8 and out.shape == film.shape
        np.testing.assert_array_equal(out, film)
        np.testing.assert_array_equal(preprocess_array(out, CFG), preprocess_array(film, CFG))


def test_an_extensionless_file_is_dicom_by_its_marker_whatever_its_name(films, tmp_path):
    path = write_dicom(tmp_path / "1.2.840.113619.2.55.3", films[0])
    np.testing.assert_array_equal(decode_bytes(path.read_bytes(), "row 0"), films[0])  # base64 bytes have no name
    np.testing.assert_array_equal(read_image(path), films[0])
    (tmp_path / "notes").write_text("x" * 200)
    assert is_image_file(path) and not is_image_file(tmp_path / "notes")  # the control: a text file of that size


def _standard_window(x: np.ndarray, center: float, width: float, y_max: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1 (LINEAR), written from the standard's pseudo-code, scaled to 0..255."""
    c, w = center - 0.5, width - 1
    y = np.where(x <= c - w / 2, 0.0, np.where(x > c + w / 2, y_max, ((x - c) / w + 0.5) * y_max))
    return y * 255 / y_max


def test_a_narrow_window_follows_the_standard_and_clips(films, tmp_path):
    stored = films[0].astype(np.uint16) * 16
    path = write_dicom(tmp_path / "narrow.dcm", stored, bits_stored=12, WindowCenter=1600, WindowWidth=800)
    out = read_image(path).astype(float)
    expected = _standard_window(stored.astype(float), 1600, 800, 4095)
    assert np.abs(out - expected).max() <= 0.5 + 1e-9
    assert (out == 0).mean() > 0.02 and (out == 255).mean() > 0.02  # the control: it really clips both ends


def test_without_the_lut_the_narrow_window_applies(films, tmp_path):
    """The control of the VOI LUT twin: the same file minus its LUT is windowed, and looks nothing like the film."""
    stored = films[0].astype(np.uint16) * 16
    out = read_image(write_dicom(tmp_path / "w.dcm", stored, bits_stored=12, WindowCenter=100, WindowWidth=50))
    assert np.abs(out.astype(int) - films[0]).mean() > 50


def test_16_bit_without_a_window_is_stretched_like_a_16_bit_png(films, tmp_path):
    stored = films[0].astype(np.uint16) * 40 + 1000  # values 1000..11200 in 16 bits
    png = tmp_path / "film16.png"
    assert cv2.imwrite(str(png), stored)
    dcm = write_dicom(tmp_path / "film16.dcm", stored)
    np.testing.assert_array_equal(read_image(dcm), to_gray_uint8(read_image(png)))
    np.testing.assert_array_equal(preprocess_array(read_image(dcm), CFG), preprocess_array(read_image(png), CFG))


def shipped(name: str) -> str:
    path = get_testdata_file(name, download=False)
    if path is None:
        pytest.skip(f"pydicom's {name} needs a download (not available offline)")
    return path


@pytest.mark.parametrize("name, reason", [
    ("rtdose.dcm", "multi-frame DICOM (15 frames)"),
    ("SC_rgb_rle.dcm", "colour DICOM (Photometric Interpretation RGB, 3 sample(s) per pixel)"),
    ("SC_ybr_full_422_uncompressed.dcm", "colour DICOM (Photometric Interpretation YBR_FULL_422"),
    ("examples_palette.dcm", "colour DICOM (Photometric Interpretation PALETTE COLOR"),
    ("reportsi.dcm", "DICOM without pixel data (Basic Text SR Storage)"),
    ("test-SR.dcm", "DICOM without pixel data (Comprehensive SR Storage)"),
    ("rtplan.dcm", "DICOM without pixel data (RT Plan Storage)"),
    ("liver_1frame.dcm", "1 bit(s) stored"),
])
def test_pydicoms_test_files_that_are_no_film_are_refused_with_their_reason(name, reason):
    path = shipped(name)
    with pytest.raises(ImageError) as err:
        read_image(path)
    assert reason in str(err.value) and str(err.value).startswith(path)
    assert file_problem(path) == err.value.reason  # the scan refuses it before any pixel is decoded


def test_pydicoms_films_read_alike_in_every_transfer_syntax():
    plain = read_image(shipped("MR_small.dcm"))
    assert plain.dtype == np.uint8 and plain.shape == (64, 64) and plain.std() > 20
    decoded = 0
    for name in ("MR_small_bigendian.dcm", "MR_small_implicit.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm",
                 "MR_small_jpeg_ls_lossless.dcm"):
        path = shipped(name)
        syntax = pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        if syntax.is_compressed and not get_decoder(syntax).is_available:
            with pytest.raises(ImageError) as err:
                read_image(path)
            assert f"compressed as {syntax.name} ({syntax}) and no installed decoder reads it" in str(err.value)
            assert "install one of" in str(err.value)
            continue
        np.testing.assert_array_equal(read_image(path), plain)
        decoded += syntax.is_compressed
    assert decoded >= 1  # the control: RLE is decoded by pydicom itself, so at least one compressed file was read


def test_a_signed_ct_with_rescale_reads():
    out = read_image(shipped("CT_small.dcm"))
    assert out.dtype == np.uint8 and out.shape == (128, 128) and out.std() > 20


def _report(path):
    """A structured report carrying the fake patient header and no pixels."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "SR"
    for key, value in FAKE_HEADER.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)
    return path


def test_the_scan_uses_dicom_films_and_lists_the_others_with_their_reason(synthetic_dataset, data_cfg, films, tmp_path):
    normal = synthetic_dataset / "train" / "NORMAL"
    source = sorted(normal.glob("*.jpeg"))[0]
    gray = to_gray_uint8(read_image(source))
    write_dicom(normal / "IM-9100-0001", gray.astype(np.uint16) * 16, bits_stored=12, WindowCenter=2040.5,
                WindowWidth=4081)
    write_dicom(normal / "IM-9101-0001.DCM", 255 - gray, photometric="MONOCHROME1")
    write_dicom(normal / "multi.dcm", np.stack([gray, gray, gray]))
    _report(normal / "report.dcm")
    truncated = write_dicom(normal / "truncated.dcm", gray)
    truncated.write_bytes(truncated.read_bytes()[:-2000])  # the header is whole, the pixels are cut
    (normal / "README").write_text("films exported from the archive\n" * 10)

    manifest, skipped = scan(synthetic_dataset)
    names = set(manifest["path"].map(lambda p: p.rsplit("/", 1)[-1]))
    assert {"IM-9100-0001", "IM-9101-0001.DCM", "truncated.dcm"} <= names
    reasons = {item["path"].rsplit("/", 1)[-1]: item["reason"] for item in skipped}
    assert reasons["multi.dcm"].startswith("multi-frame DICOM (3 frames)")
    assert reasons["report.dcm"].startswith("DICOM without pixel data (Basic Text SR Storage)")
    assert reasons["README"].startswith("not an image file (suffix 'none'")

    dataset = load_dataset(data_cfg(), PreprocessConfig(image_size=32), progress=False)
    reasons.update({item["path"].rsplit("/", 1)[-1]: item["reason"] for item in dataset.skipped})
    assert reasons["truncated.dcm"].startswith("pixel data cannot be decoded (Explicit VR Little Endian")
    rows = dataset.manifest["path"].map(lambda p: p.rsplit("/", 1)[-1])
    twins = [dataset.images[(rows == name).to_numpy()][0] for name in ("IM-9100-0001", "IM-9101-0001.DCM")]
    expected = preprocess_array(gray, PreprocessConfig(image_size=32))
    for twin in twins:
        np.testing.assert_array_equal(twin, expected)
    written = " ".join(reasons.values()) + "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    assert "truncated.dcm" in written  # the control: the cache's failure list was read
    assert not [v for v in FAKE_HEADER.values() if v.lower() in written.lower()]


PYDICOM_WARNS = """
import logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
{setup}
ds = pydicom.dcmread(sys.argv[1])
print(ds.get("NumberOfFrames"))
"""


@pytest.mark.slow
def test_pydicoms_warnings_which_quote_header_values_are_kept_out_of_logs():
    path = shipped("badVR.dcm")  # Number of Frames holds '1A'; pydicom's warning quotes it
    def run(setup):
        result = subprocess.run([sys.executable, "-c", PYDICOM_WARNS.format(setup=setup), path], cwd=REPO,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        return result.stderr
    assert "'1A'" in run("import pydicom")  # the control: on its own, pydicom logs and warns with the value
    assert "'1A'" not in run("import pydicom, pipeline.data.dicom")
    result = subprocess.run([sys.executable, "-c", "import logging, sys; logging.basicConfig(level=logging.DEBUG); "
                             "from pipeline.data.preprocess import read_image\ntry: read_image(sys.argv[1])\n"
                             "except ValueError as err: print(err)", path], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert "damaged DICOM header" in result.stdout and "1A" not in result.stdout + result.stderr
