"""A hostile-input corpus, built by the tests themselves (no binary fixture in the repository).

Each :class:`Kind` writes one (or a few) entries into a folder and says what featbench must do
with it: at listing (``kept``: an image file; ``dropped``: named like an image but not an image
file, recorded in run.json) and at decoding (``decoded`` or ``skipped``, a recorded skip with a
reason). Kinds that stop a run before any work (a name that is not UTF-8, ...) are in
``test_hostile.py`` beside the run they stop.
"""
from __future__ import annotations

import dataclasses
import io
import os
import socket
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

JPEG_CUTS = (1, 2, 3, 11, 40, 120, 400, 0.5, -40, -2)  # byte offsets (fractions of the length, or from the end)


def photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    """A small RGB crop of a real photo (scikit-image's astronaut), so descriptors find structure."""
    from skimage import data

    img = data.astronaut()
    y, x = 40 + 13 * seed, 120 + 17 * seed
    return np.ascontiguousarray(img[y:y + h, x:x + w])


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    crc = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc & 0xFFFFFFFF)


def png_raw(width: int, height: int, bit_depth: int, colour: int, rows: Callable[[], bytes] | None = None,
            extra: bytes = b"") -> bytes:
    """A PNG from chunks: IHDR as given (no check), optional extra chunks, IDAT of ``rows()``."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    idat = zlib.compress(rows() if rows else b"\x00")
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def bomb_png(side: int = 30000) -> bytes:
    """A real decompression bomb: ``side`` x ``side`` 1-bit pixels (900 M pixels for 30000, 2.7 GB as RGB)
    in about 110 kB, compressed row by row so the test never holds the raw image."""
    rows = b"\x00" * ((1 + (side + 7) // 8) * 1000)
    comp = zlib.compressobj(6)
    idat = b"".join(comp.compress(rows) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def jpeg_bytes(seed: int = 0) -> bytes:
    return encode(Image.fromarray(photo(seed=seed)), "JPEG", quality=90)


def jpeg_with_size(width: int, height: int) -> bytes:
    """A valid small JPEG whose SOF0 header claims ``width`` x ``height``."""
    data = bytearray(jpeg_bytes())
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def bmp_with_size(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.fromarray(photo(8, 8)), "BMP"))
    struct.pack_into("<ii", data, 18, width, height)
    return bytes(data)


def exif_jpeg(**tags) -> bytes:
    exif = Image.Exif()
    for tag, value in tags.items():
        exif[int(tag.lstrip("t"), 16)] = value
    return encode(Image.fromarray(photo(32, 48)), "JPEG", exif=exif.tobytes())


def gif_frames(n: int) -> bytes:
    frames = [Image.new("P", (4, 4), i % 200) for i in range(n)]
    for f in frames:
        f.putpalette(list(range(256)) * 3)
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=10, loop=0)


def _grey_alpha_tiff() -> bytes:
    g = photo()[..., 0]
    return encode(Image.fromarray(np.stack([g, 255 - g], axis=2), mode="LA"), "TIFF")


def _palette_alpha_png() -> bytes:
    img = Image.fromarray(photo()).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return encode(img, "PNG", transparency=0)


def _apng() -> bytes:
    a, b = Image.fromarray(photo(seed=0)), Image.fromarray(photo(seed=1))
    return encode(a, "PNG", save_all=True, append_images=[b])


def _ztxt_bomb() -> bytes:
    text = b"Comment\x00\x00" + zlib.compress(b"A" * (16 << 20), 1)  # 16 MB of text in 70 kB
    return png_raw(4, 4, 8, 0, rows=lambda: b"\x00\x10\x20\x30\x40" * 4, extra=png_chunk(b"zTXt", text))


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    what: str
    filename: str
    make: Callable[[Path], None]  # writes the entry at the given path
    listing: str = "kept"  # kept | dropped
    decode: frozenset = frozenset({"decoded"})  # outcomes allowed: decoded, skipped
    cnn: bool = False  # also put through the CNN (a handful: the CNN is the slow family)
    needs_non_root: bool = False

    def build(self, folder: Path) -> Path:
        path = folder / self.filename
        self.make(path)
        return path


SKIP = frozenset({"skipped"})


def _bytes(fn: Callable[[], bytes]) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(fn())


def _array(arr_fn: Callable[[], np.ndarray], fmt: str, mode: str | None = None, **kw) -> Callable[[Path], None]:
    return _bytes(lambda: encode(Image.fromarray(arr_fn(), mode=mode) if mode else Image.fromarray(arr_fn()), fmt, **kw))


def _truncated(cut: float) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        data = jpeg_bytes()
        at = int(len(data) * cut) if 0 < cut < 1 else int(cut)
        path.write_bytes(data[:at])
    return make


def _unreadable(path: Path) -> None:
    path.write_bytes(jpeg_bytes())
    path.chmod(0)


def _symlink_loop(path: Path) -> None:
    other = path.with_name("loop-b.jpg")
    os.symlink(other.name, path)
    os.symlink(path.name, other)


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


EITHER = frozenset({"decoded", "skipped"})

KINDS: list[Kind] = [
    *[Kind(f"jpeg-truncated-{cut}", f"JPEG truncated at byte {cut}" if cut >= 1 else
           (f"JPEG truncated at {cut:.0%}" if cut > 0 else f"JPEG missing its last {-cut} bytes"),
           f"trunc{i:02d}.jpg", _truncated(cut), decode=SKIP)
      for i, cut in enumerate(JPEG_CUTS)],
    Kind("zero-bytes", "an empty file", "empty.jpg", lambda p: p.write_bytes(b""), decode=SKIP),
    Kind("text-as-jpeg", "a text file named .jpg", "text.jpg", lambda p: p.write_text("not an image\n" * 20), decode=SKIP),
    Kind("png-bad-crc", "a PNG whose IHDR checksum is wrong", "badcrc.png",
         _bytes(lambda: png_raw(4, 4, 8, 0, rows=lambda: b"\x00" * 20)[:29] + b"\x00\x00\x00\x00"
                + png_raw(4, 4, 8, 0, rows=lambda: b"\x00" * 20)[33:]), decode=SKIP),
    Kind("png-zero-width", "a PNG declaring 0 x 16 pixels", "zerowidth.png", _bytes(lambda: png_raw(0, 16, 8, 0)),
         decode=SKIP),
    Kind("png-bad-bit-depth", "a PNG with bit depth 3", "depth3.png", _bytes(lambda: png_raw(4, 4, 3, 0)), decode=SKIP),
    Kind("png-65535x1", "a 65535 x 1 PNG strip", "strip.png",
         _array(lambda: np.tile(np.arange(256, dtype=np.uint8), 256)[None, :65535], "PNG"), cnn=True),
    Kind("png-1x1", "a 1 x 1 PNG", "one.png", _array(lambda: np.full((1, 1, 3), 128, np.uint8), "PNG"), cnn=True),
    Kind("png-4x900", "a 4 x 900 PNG (4 rows)", "thin.png", _array(lambda: photo(4, 300).repeat(3, axis=1), "PNG"),
         cnn=True),
    Kind("png-900x4", "a 900 x 4 PNG (4 columns)", "tall.png",
         _array(lambda: np.ascontiguousarray(photo(300, 4).repeat(3, axis=0)), "PNG")),
    Kind("jpeg-cmyk", "a 4-channel (CMYK) JPEG", "cmyk.jpg", _bytes(lambda: encode(Image.fromarray(photo()).convert("CMYK"), "JPEG")),
         cnn=True),
    Kind("tiff-grey-alpha", "a greyscale + alpha TIFF", "la.tif", _bytes(_grey_alpha_tiff), cnn=True),
    Kind("jpeg-huge-exif", "a JPEG with a 60 kB EXIF block", "exif.jpg", _bytes(lambda: exif_jpeg(t010e="x" * 60000))),
    Kind("jpeg-exif-rotated", "a JPEG with EXIF orientation 6 (rotated)", "rotated.jpg", _bytes(lambda: exif_jpeg(t0112=6))),
    Kind("jpeg-bad-orientation", "a JPEG with EXIF orientation 9 (invalid)", "orient9.jpg", _bytes(lambda: exif_jpeg(t0112=9))),
    Kind("gif-1000-frames", "a GIF with 1000 frames", "frames.gif", _bytes(lambda: gif_frames(1000)), cnn=True),
    Kind("apng", "an animated PNG", "anim.png", _bytes(_apng)),
    Kind("png-16bit", "a 16-bit greyscale PNG", "sixteen.png",
         _array(lambda: (photo()[..., 0].astype(np.uint16) * 257), "PNG")),
    Kind("png-palette-alpha", "a palette PNG with transparency", "palette.png", _bytes(_palette_alpha_png)),
    Kind("png-1bit", "a 1-bit PNG", "bits.png", _bytes(lambda: encode(Image.fromarray(photo()).convert("1"), "PNG"))),
    Kind("tiff-float", "a 32-bit float TIFF", "float.tif", _array(lambda: photo()[..., 0].astype(np.float32) / 255, "TIFF")),
    Kind("png-named-jpg", "a PNG named .jpg", "png.jpg", _array(photo, "PNG")),
    Kind("webp", "a WebP image", "image.webp", _array(photo, "WEBP")),
    Kind("png-ztxt-bomb", "a PNG with a zTXt chunk inflating to 16 MB", "ztxt.png", _bytes(_ztxt_bomb), decode=EITHER),
    Kind("png-bomb", "a 30000 x 30000 PNG in 110 kB (decompression bomb)", "bomb.png", _bytes(bomb_png), decode=SKIP,
         cnn=True),
    Kind("jpeg-header-65500", "a JPEG whose header claims 65500 x 65500", "huge.jpg",
         _bytes(lambda: jpeg_with_size(65500, 65500)), decode=SKIP),
    Kind("jpeg-header-9000", "a JPEG whose header claims 9000 x 9000 (over the budget, under PIL's limit)",
         "big.jpg", _bytes(lambda: jpeg_with_size(9000, 9000)), decode=SKIP),
    Kind("bmp-header-50000", "a BMP whose header claims 50000 x 50000", "huge.bmp",
         _bytes(lambda: bmp_with_size(50000, 50000)), decode=SKIP),
    Kind("unreadable", "a file without read permission", "noread.jpg", _unreadable, listing="dropped", decode=SKIP,
         needs_non_root=True),
    Kind("fifo", "a FIFO named .jpg (must not hang)", "fifo.jpg", lambda p: os.mkfifo(p), listing="dropped",
         decode=SKIP, cnn=True),
    Kind("socket", "a Unix socket named .png", "sock.png", _socket, listing="dropped", decode=SKIP),
    Kind("folder-named-jpg", "a folder named x.jpg", "x.jpg", lambda p: p.mkdir(), listing="dropped", decode=SKIP),
    Kind("symlink-loop", "two symlinks pointing at each other", "loop-a.jpg", _symlink_loop, listing="dropped",
         decode=SKIP),
    Kind("broken-symlink", "a symlink to a missing file", "dangling.jpg", lambda p: os.symlink("nowhere.jpg", p),
         listing="dropped", decode=SKIP),
]


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def build_corpus(folder: Path) -> dict[str, list[Path]]:
    """Every kind under ``folder``; kinds that need a non-root user are left out when run as root
    (root reads any file, so a permission-less file is readable: nothing to test)."""
    folder.mkdir(parents=True, exist_ok=True)
    built = {}
    for kind in KINDS:
        if kind.needs_non_root and is_root():
            continue
        built[kind.name] = [kind.build(folder)]
    return built
