"""Decoding: every pixel format arrives as RGB uint8 with EXIF orientation applied."""
import io

import numpy as np
import pytest
from PIL import Image

from featbench.datasets.images import ImageDecodeError, decode_bytes, read_image


def _encode(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_grayscale_becomes_rgb():
    gray = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    out = decode_bytes(_encode(gray))
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[..., 0] == out[..., 2]).all() and out[0, 5, 1] == 5


def test_palette_and_alpha():
    pal = Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).convert("P")
    assert decode_bytes(_encode(pal)).shape == (4, 4, 3)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:2, :, 3] = 255  # top half opaque red, bottom half transparent
    out = decode_bytes(_encode(Image.fromarray(rgba, "RGBA")))
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[3, 0]) == (255, 255, 255)  # composited on white


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    out = decode_bytes(_encode(cmyk, "JPEG", quality=95))
    assert out.shape == (8, 8, 3)
    assert out[4, 4, 0] > 200 and out[4, 4, 1] < 60


def test_sixteen_bit_is_rescaled_not_clipped():
    arr = np.array([[0, 32768, 65535]], dtype=np.uint16)
    out = decode_bytes(_encode(Image.fromarray(arr)))
    assert list(out[0, :, 0]) == [0, 128, 255]


def test_exif_orientation_applied():
    img = Image.fromarray(np.zeros((10, 20, 3), np.uint8))  # 20 wide, 10 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_bytes(_encode(img, "JPEG", exif=exif))
    assert out.shape[:2] == (20, 10)


def test_truncated_and_garbage_files_name_the_file(tmp_path):
    good = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    trunc = tmp_path / "trunc.jpg"
    trunc.write_bytes(good[: len(good) // 2])
    with pytest.raises(ImageDecodeError, match="trunc.jpg"):
        read_image(trunc)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageDecodeError, match="junk.png"):
        read_image(junk)
    with pytest.raises(ImageDecodeError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")
