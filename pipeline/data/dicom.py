"""DICOM films shown as a viewer shows them (Modality LUT, then VOI LUT or window, MONOCHROME1 inverted), and
only their pixels leave this module: no header value is returned, logged or quoted in a refusal reason."""
from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder
from pydicom.pixels.processing import apply_voi, apply_windowing

DICOM_SUFFIXES = (".dcm", ".dicom")
MAGIC_OFFSET, MAGIC = 128, b"DICM"  # PS3.10: a 128-byte preamble, then the four letters
GRAY = ("MONOCHROME1", "MONOCHROME2")
BITS_STORED = range(8, 17)
# Only these words are echoed back: a damaged header could hold anything in the field.
COLOUR = ("RGB", "ARGB", "CMYK", "HSV", "PALETTE COLOR", "YBR_FULL", "YBR_FULL_422", "YBR_PARTIAL_420",
          "YBR_PARTIAL_422", "YBR_ICT", "YBR_RCT", "XYB")
PIXEL_TAGS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")

# pydicom's warnings quote element values (an invalid date is printed as it stands): keep them out of our
# logs and stderr. Deliberately global: they are not shown for any file this process reads.
logging.getLogger("pydicom").addFilter(lambda record: False)
warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")


class DicomError(ValueError):
    """A DICOM file that is not one readable grayscale film; the message is the reason, and quotes no header."""


def has_magic(head: bytes) -> bool:
    return head[MAGIC_OFFSET:MAGIC_OFFSET + len(MAGIC)] == MAGIC


def is_dicom(name: str, head: bytes) -> bool:
    """A `.dcm`/`.dicom` name, or the `DICM` marker at byte 128 whatever the name (many archives use none)."""
    return Path(name).suffix.lower() in DICOM_SUFFIXES or has_magic(head)


def _parse(source: str | Path | bytes, header_only: bool = False) -> Dataset:
    """The data set; a file without the preamble (old or exported raw) is tried as a bare data set."""
    def open_source():
        return io.BytesIO(source) if isinstance(source, bytes) else str(source)

    defer = 1024 if header_only else None  # element values over 1 KiB (pixels) are not read for the checks
    try:
        try:
            return pydicom.dcmread(open_source(), defer_size=defer)
        except pydicom.errors.InvalidDicomError:
            ds = pydicom.dcmread(open_source(), defer_size=defer, force=True)
            if not any(tag in ds for tag in (*PIXEL_TAGS, "SOPClassUID", "Modality", "Rows")):
                raise DicomError("not a DICOM image (no 'DICM' marker at byte 128, and no image elements)") from None
            return ds
    except DicomError:
        raise
    except Exception as err:  # pydicom's messages may quote values: name the kind of failure only
        raise DicomError(f"not a readable DICOM file ({type(err).__name__} while reading the header)") from None


def _sop_class(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID")
    name = getattr(uid, "name", "")
    return name if uid is not None and name and name != str(uid) else "an unknown SOP class"


def _transfer_syntax(ds: Dataset):
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def problem(ds: Dataset) -> str | None:
    """Why a parsed data set is not one grayscale film we can decode here, or None; needs no pixel read."""
    try:
        return _problem(ds)
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # e.g. Number of Frames '1A'
        return f"damaged DICOM header (an image element cannot be read: {type(err).__name__})"


def _problem(ds: Dataset) -> str | None:
    if not any(tag in ds for tag in PIXEL_TAGS):
        return f"DICOM without pixel data ({_sop_class(ds)}): a report, plan or structured document, not an image"
    if "PixelData" not in ds:
        return "DICOM with float pixel data (a parametric map or dose grid), not a radiograph"
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        return (f"multi-frame DICOM ({frames} frames): one film per file is read; "
                "export the frame you want as a single-frame file")
    interpretation = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    samples = int(ds.get("SamplesPerPixel") or 1)
    if samples != 1 or interpretation not in GRAY:
        shown = interpretation if interpretation in COLOUR else ("missing" if not interpretation else "unknown")
        return (f"colour DICOM (Photometric Interpretation {shown}, {samples} sample(s) per pixel): "
                "only grayscale MONOCHROME1 or MONOCHROME2 films are read")
    bits = int(ds.get("BitsStored") or 0)
    if bits not in BITS_STORED:
        return f"{bits} bit(s) stored: films with 8 to 16 bits stored are read"
    return _decoder_problem(_transfer_syntax(ds))


def _decoder_problem(syntax) -> str | None:
    if syntax is None or not syntax.is_compressed:
        return None
    label = f"{syntax.name} ({syntax})" if syntax.name != str(syntax) else f"transfer syntax {syntax}"
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f"compressed as {label}, which pydicom has no decoder for"
    if decoder.is_available:
        return None
    needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
    return f"compressed as {label} and no installed decoder reads it (install one of: {needs})"


def file_problem(path: str | Path) -> str | None:
    """The refusal reason of a DICOM file from its header alone (pixels are not decoded), or None."""
    try:
        return problem(_parse(path, header_only=True))
    except DicomError as err:
        return str(err)


def read_dicom(source: str | Path | bytes) -> np.ndarray:
    """(rows, cols) uint8, bone bright: the film as the file says to show it. Raises DicomError."""
    ds = _parse(source)
    reason = problem(ds)
    if reason:
        raise DicomError(reason)
    try:
        stored = ds.pixel_array
    except Exception as err:
        syntax = _transfer_syntax(ds)
        hint = "; another decoder (gdcm, pylibjpeg) may read it" if syntax is not None and syntax.is_compressed else ""
        raise DicomError(f"pixel data cannot be decoded ({getattr(syntax, 'name', 'no transfer syntax')}: "
                         f"{type(err).__name__}){hint}") from None
    if stored.ndim != 2 or stored.size == 0:
        raise DicomError(f"pixel data has shape {stored.shape}, not one grayscale frame")
    return display(stored, ds)


def display(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Stored values -> 8-bit display values: Modality LUT (or rescale), then the VOI LUT if the file has
    one, else its first window; without either, 8-bit films as stored and deeper ones stretched min to max."""
    values = apply_modality_lut(stored, ds)
    low, high = _voi_range(ds, values)
    if low is not None:
        values = apply_voi_lut(values, ds)
    elif _plain_8_bit(ds):
        low, high = 0.0, 255.0
    else:
        low, high = float(values.min()), float(values.max())
    scaled = (np.asarray(values, np.float64) - low) * (255.0 / max(high - low, 1e-12))
    gray = np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)
    if str(ds.PhotometricInterpretation).strip().upper() == "MONOCHROME1":
        gray = 255 - gray  # MONOCHROME1 shows low values white: invert so bone is bright as in the training films
    return gray


def _uses_lut(ds: Dataset) -> bool:
    """apply_voi_lut's own choice: a complete VOI LUT Sequence wins over a window."""
    items = ds.get("VOILUTSequence")
    return bool(items) and None not in (items[0].get("LUTDescriptor"), items[0].get("LUTData"))


def _voi_range(ds: Dataset, values: np.ndarray) -> tuple[float | None, float | None]:
    """The values the VOI stage can output (None, None when the file has no VOI): what maps onto 0..255."""
    if _uses_lut(ds):
        count, first = int(ds.VOILUTSequence[0].LUTDescriptor[0]) or 2 ** 16, int(ds.VOILUTSequence[0].LUTDescriptor[1])
        table = apply_voi(np.arange(first, first + count), ds)
        return float(table.min()), float(table.max())
    if ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        ends = apply_windowing(np.array([-np.inf, np.inf]), ds)  # below and above the window: y_min, y_max
        return float(ends[0]), float(ends[1])
    return None, None


def _plain_8_bit(ds: Dataset) -> bool:
    """8 bits stored, unsigned, no rescale: already display values, kept as they are (as a JPEG's would be)."""
    slope, intercept = float(ds.get("RescaleSlope") or 1), float(ds.get("RescaleIntercept") or 0)
    return (int(ds.BitsStored) <= 8 and int(ds.get("PixelRepresentation") or 0) == 0 and slope == 1 and intercept == 0
            and "ModalityLUTSequence" not in ds)
