"""Decode -> gray -> CLAHE -> resize for every input kind a user may have."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from pipeline.config import PreprocessConfig
from pipeline.data.preprocess import (
    ImageError,
    preprocess_array,
    preprocess_file,
    read_image,
    to_gray_uint8,
    to_model_input,
)

CFG = PreprocessConfig(image_size=48)


def _chest(height=80, width=100) -> np.ndarray:
    """A low-contrast 8-bit gray gradient with structure: CLAHE has something to stretch."""
    yy, xx = np.mgrid[0:height, 0:width]
    return (90 + 20 * (xx / width) + 8 * np.sin(yy / 5.0)).astype(np.uint8)


def _inputs() -> dict[str, np.ndarray]:
    gray = _chest()
    return {
        "gray8": gray,
        "rgb": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR),
        "rgba": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA),
        "gray16": gray.astype(np.uint16) * 16,  # 12-bit values stored in 16 bits
        "rgb16": cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR).astype(np.uint16) * 256,
    }


@pytest.mark.parametrize("kind", sorted(_inputs()))
def test_preprocess_array_shape_dtype_range(kind):
    out = preprocess_array(_inputs()[kind], CFG)
    assert out.shape == (48, 48) and out.dtype == np.uint8
    assert int(out.max()) - int(out.min()) > 40  # CLAHE spread the 90..118 input


def test_clahe_raises_contrast_of_a_flat_image():
    gray = _chest()
    out = preprocess_array(gray, PreprocessConfig(image_size=80))
    assert out.std() > 1.5 * cv2.resize(gray, (80, 80), interpolation=cv2.INTER_AREA).std()


def test_colour_and_alpha_give_the_same_gray():
    inputs = _inputs()
    np.testing.assert_array_equal(to_gray_uint8(inputs["rgb"]), inputs["gray8"])
    np.testing.assert_array_equal(to_gray_uint8(inputs["rgba"]), inputs["gray8"])
    transparent = inputs["rgba"].copy()
    transparent[..., 3] = 0  # alpha carries no X-ray information
    np.testing.assert_array_equal(to_gray_uint8(transparent), inputs["gray8"])


def test_16_bit_is_stretched_to_8_bit():
    gray16 = np.linspace(1000, 1400, 64 * 64).reshape(64, 64).astype(np.uint16)  # narrow 16-bit range
    out = to_gray_uint8(gray16)
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() >= 254
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # order of intensities kept


def test_files_round_trip(tmp_path):
    gray = _chest()
    paths = {"jpeg": tmp_path / "a.jpeg", "png": tmp_path / "b.png", "png16": tmp_path / "c.png",
             "rgba": tmp_path / "d.png"}
    assert cv2.imwrite(str(paths["jpeg"]), gray)
    assert cv2.imwrite(str(paths["png"]), gray)
    assert cv2.imwrite(str(paths["png16"]), gray.astype(np.uint16) * 16)
    assert cv2.imwrite(str(paths["rgba"]), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGRA))
    assert read_image(paths["png16"]).dtype == np.uint16 and read_image(paths["rgba"]).shape[2] == 4
    for path in paths.values():
        out = preprocess_file(path, CFG)
        assert out.shape == (48, 48) and out.dtype == np.uint8
    np.testing.assert_array_equal(preprocess_file(paths["png"], CFG), preprocess_file(paths["rgba"], CFG))


def test_read_image_rejects_what_is_not_an_image(tmp_path):
    empty, garbage = tmp_path / "empty.jpeg", tmp_path / "garbage.jpeg"
    empty.write_bytes(b"")
    garbage.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    for path in (empty, garbage):
        with pytest.raises(ImageError, match=path.name):
            read_image(path)


def test_to_model_input():
    batch = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    out = to_model_input(batch)
    assert out.shape == (2, 4, 4, 3) and out.dtype == np.float32
    for channel in range(3):
        np.testing.assert_array_equal(out[..., channel], batch)
