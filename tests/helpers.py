"""Small real image folders for harness tests: texture patches from scikit-image photos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_texture_folder(root: Path, per_class: int = 6, size: int = 48, bad: bool = False) -> Path:
    """``root/{train,test}/{brick,grass,gravel}/*.png`` cut from scikit-image's texture photos.

    With ``bad=True`` one truncated JPEG is added to train/brick.
    """
    from skimage import data

    for cls in ("brick", "grass", "gravel"):
        img = getattr(data, cls)()
        for split, y0 in (("train", 0), ("test", 256)):
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                y, x = y0 + (i // 4) * size, (i % 4) * size
                Image.fromarray(np.ascontiguousarray(img[y:y + size, x:x + size])).save(folder / f"{i:02d}.png")
    if bad:
        (root / "train" / "brick" / "zz_truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 40)
    return root


def write_suite(path: Path, tasks: list[str], extractors: list[str], **extra) -> Path:
    lines = [f'name = "{path.stem}"', "seed = 0",
             "extractors = [" + ", ".join(f'"{e}"' for e in extractors) + "]"]
    lines += [f"{k} = {v!r}".replace("'", '"') for k, v in extra.items()]
    for t in tasks:
        lines += ["", "[[tasks]]", f'name = "{t}"']
    path.write_text("\n".join(lines) + "\n")
    return path
