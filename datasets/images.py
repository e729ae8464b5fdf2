"""Decode any image file to RGB ``uint8 [H, W, 3]`` with EXIF orientation applied.

Every extractor sees the same pixels: grayscale and palette images are expanded to RGB,
CMYK is converted, alpha is composited on white, and 16-bit or float images are rescaled
to 8 bits by their full range (not clipped).
"""
from __future__ import annotations

import contextlib
import io
import os
from typing import Iterator, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

PathLike = Union[str, os.PathLike]


class ImageDecodeError(ValueError):
    """An image file that cannot be read or decoded (the message says why)."""


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
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: cannot read file ({exc.strerror or exc})") from exc
    return decode_bytes(data, str(path))


@contextlib.contextmanager
def decode_errors(name: str) -> Iterator[None]:
    """Turn what opening and decoding an image can raise into one :class:`ImageDecodeError` naming
    ``name`` (every decode path uses it, so a bad file reads the same wherever it is met)."""
    try:
        yield
    except ImageDecodeError:
        raise
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise ImageDecodeError(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageDecodeError(f"{name}: not a recognised image format") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageDecodeError(f"{name}: corrupt or truncated image ({exc})") from exc


def decode_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    if not data:
        raise ImageDecodeError(f"{name}: empty file")
    with decode_errors(name), Image.open(io.BytesIO(data)) as img:
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
