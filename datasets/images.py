"""Decode any image file to RGB ``uint8 [H, W, 3]`` with EXIF orientation applied.

Every extractor sees the same pixels: grayscale and palette images are expanded to RGB,
CMYK is converted, alpha is composited on white, and 16-bit or float images are rescaled
to 8 bits by their full range (not clipped).

Hostile files are a recorded skip (:class:`ImageDecodeError`, the message names the file and
the reason), never a crash or a hang:

* Only regular files are read, opened non-blocking: a FIFO, socket or device named ``x.jpg``
  is refused before a byte is read (a FIFO would otherwise block forever).
* **Pixel budget.** The header's width x height is checked *before* decoding: an image with a
  zero side, or more than :func:`max_pixels` pixels (default ``DEFAULT_MAX_PIXELS`` = 64
  million, e.g. 8000 x 8000: about 192 MB as RGB, a few times that while converting), is
  skipped without allocating its pixels. A 1 MB PNG can declare 30000 x 30000 pixels (2.7 GB
  decoded): such decompression bombs never reach the decoder. Set ``FEATBENCH_MAX_PIXELS`` to
  raise or lower the budget (a run checks its value before any work).
* Whatever else the decoder raises on a damaged file (truncated data, bad CRCs, malformed
  EXIF, unsupported modes) becomes an :class:`ImageDecodeError` with the decoder's reason:
  the decoder is a third-party parser of untrusted bytes, so any exception it raises means
  "this file cannot be decoded".
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import stat
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from featbench.errors import FeatbenchError

PathLike = Union[str, os.PathLike]

DEFAULT_MAX_PIXELS = 64_000_000
MAX_PIXELS_ENV = "FEATBENCH_MAX_PIXELS"


class ImageDecodeError(ValueError):
    """An image file that cannot be read or decoded (the message says why)."""


def max_pixels() -> int:
    """The pixel budget: ``$FEATBENCH_MAX_PIXELS`` if set, else ``DEFAULT_MAX_PIXELS``."""
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise FeatbenchError(f"{MAX_PIXELS_ENV}={text!r}: expected a positive number of pixels")
    return value


def _file_kind(mode: int) -> str:
    for test, kind in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return kind
    return "not a regular file"


def read_file_bytes(path: PathLike) -> bytes:
    """The bytes of a regular file; anything else (FIFO, socket, folder, gone) is an ImageDecodeError.

    ``O_NONBLOCK`` makes opening a FIFO return at once instead of waiting for a writer.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageDecodeError(f"{path}: cannot read file ({_file_kind(mode)}, not an image file)")
        with os.fdopen(os.dup(fd), "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    finally:
        os.close(fd)


def check_size(size: tuple[int, int], name: str) -> None:
    """Refuse, from the header's size alone, an image with a zero side or over the pixel budget."""
    w, h = size
    if w <= 0 or h <= 0:
        raise ImageDecodeError(f"{name}: image has zero width or height ({w} x {h})")
    budget = max_pixels()
    if w * h > budget:
        raise ImageDecodeError(f"{name}: {w} x {h} = {w * h / 1e6:.0f} M pixels exceeds the pixel budget of "
                               f"{budget / 1e6:g} M (possible decompression bomb; ${MAX_PIXELS_ENV} raises it)")


@contextlib.contextmanager
def decode_errors(name: str) -> Iterator[None]:
    """Turn whatever reading and decoding an image raises into one :class:`ImageDecodeError` naming
    ``name`` (every decode path uses it, so a bad file reads the same wherever it is met)."""
    try:
        yield
    except (ImageDecodeError, FeatbenchError):
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise ImageDecodeError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not a recognised image format") from exc
    except Image.DecompressionBombError as exc:  # PIL's own limit, checked inside Image.open
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(pixels.group(1)) / 1e6:.0f} M pixels" if pixels else "the image"
        raise ImageDecodeError(f"{name}: {size} exceeds the pixel budget of {max_pixels() / 1e6:g} M "
                               f"(possible decompression bomb; ${MAX_PIXELS_ENV} raises it)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - any decoder failure on untrusted bytes is a bad file
        raise ImageDecodeError(f"{name}: corrupt image ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def open_image(data: bytes, name: str) -> Iterator[Image.Image]:
    """A PIL image over ``data`` whose header passed :func:`check_size`; every decoder failure
    inside the ``with`` block (including ``load()`` and conversions) becomes an ImageDecodeError."""
    if not data:
        raise ImageDecodeError(f"{name}: empty file")
    with decode_errors(name), Image.open(io.BytesIO(data)) as img:
        check_size(img.size, name)
        yield img


def to_rgb_uint8(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode to an RGB uint8 array (EXIF orientation applied)."""
    img = ImageOps.exif_transpose(img)
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        if mode.startswith("I;16") or (mode == "I" and hi > 255):
            top = 65535.0 if mode.startswith("I;16") else max(hi, 1.0)
            arr = arr / top * 255.0
        elif mode == "F" and hi <= 1.0 and lo >= 0.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def read_image(path: PathLike) -> np.ndarray:
    """Read and fully decode an image file; raise :class:`ImageDecodeError` naming the file."""
    return decode_bytes(read_file_bytes(path), str(path))


def decode_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    with open_image(data, name) as img:
        img.load()  # forces a full decode: a truncated file fails here, not later
        return to_rgb_uint8(img)


def to_gray(image: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma of an RGB uint8 image as uint8 (what OpenCV's COLOR_RGB2GRAY gives)."""
    import cv2

    if image.ndim == 2:
        return image
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def resize_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink (never enlarge) so the longer side is at most ``max_side``; area interpolation."""
    import cv2

    if not max_side:
        return image
    h, w = image.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return image
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)
