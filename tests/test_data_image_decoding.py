"""Decoding image files for every reader: bit depths, oversized files, stray folder layouts."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esam.data.imagefolder import scan_image_folder
from esam.data.images import ImageReadError, as_rgb_uint8, decode_image, read_image_file
from esam.errors import InputError


def _encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    values = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    data = _encoded(Image.fromarray(values), "PNG")
    rgb = decode_image(data, "grey16.png")
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable
    # v * 255 / 65535, rounded: 0, 1, 127.5 -> 128, 255; the three channels equal
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 1, 128, 255])
    assert (rgb == rgb[:, :, :1]).all()


def test_thirty_two_bit_grey_within_sixteen_bits_reads_as_sixteen_bit() -> None:
    values = np.array([[0, 1000, 65535]], dtype=np.int32)
    rgb = decode_image(_encoded(Image.fromarray(values, mode="I"), "TIFF"), "grey32.tif")
    np.testing.assert_array_equal(rgb[0, :, 0], [0, 4, 255])  # 1000 * 255 / 65535 = 3.9


@pytest.mark.parametrize(
    ("array", "mode", "match"),
    [
        (np.array([[0.0, 0.5]], dtype=np.float32), "F", "floating-point grey image"),
        (np.array([[0, 70000]], dtype=np.int32), "I", "32-bit integer grey image"),
    ],
)
def test_grey_of_no_standard_range_is_an_unsupported_image(
    array: np.ndarray, mode: str, match: str
) -> None:
    data = _encoded(Image.fromarray(array, mode=mode), "TIFF")
    with pytest.raises(ImageReadError, match=match) as e:
        decode_image(data, "odd.tif")
    assert e.value.reason == "image_unsupported" and "odd.tif" in str(e.value)


def test_an_image_over_pils_pixel_limit_is_a_named_skip(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _encoded(Image.new("RGB", (30, 20)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 600 pixels > 2 x the limit
    with pytest.raises(ImageReadError, match="big.png: more than twice PIL's limit") as e:
        decode_image(data, "big.png")
    assert e.value.reason == "image_unsupported"


def test_read_image_file_refuses_what_decode_image_skips(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    Image.fromarray(np.zeros((2, 2), dtype=np.float32), mode="F").save(path)
    with pytest.raises(InputError, match="f.tif: a floating-point grey image"):
        read_image_file(path)
    grey16 = tmp_path / "g.png"
    Image.fromarray(np.full((2, 3), 65535, dtype=np.uint16)).save(grey16)
    assert (as_rgb_uint8(read_image_file(grey16)) == 255).all()


def test_a_root_with_images_and_class_folders_is_refused(tmp_path: Path) -> None:
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        Image.new("RGB", (4, 4)).save(tmp_path / c / "x.png")
    assert scan_image_folder(tmp_path).classes == ("a", "b")
    Image.new("RGB", (4, 4)).save(tmp_path / "preview.jpg")
    with pytest.raises(InputError, match=r"both images \(1, e\.g\. preview\.jpg\) and folders"):
        scan_image_folder(tmp_path)


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "P"])
def test_decoded_images_are_writable_arrays(mode: str) -> None:
    rgb = decode_image(_encoded(Image.new(mode, (5, 4)), "PNG"), f"{mode}.png")
    assert rgb.shape == (4, 5, 3) and rgb.flags.writeable
    rgb[0, 0] = 7  # callers may edit what a reader hands out
