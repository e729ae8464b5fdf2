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


#: a fast spec (small images, small k) for every registered extractor that computes from pixels
FAST_SPECS = {
    "hog": "hog:size=32",
    "orb-bow": "orb-bow:k=8",
    "sift-bow": "sift-bow:k=8",
    "sift-vlad": "sift-vlad:k=4",
    "sift-dense-bow": "sift-dense-bow:k=8,step=8",
    "sift-dense-bow-spm": "sift-dense-bow-spm:k=8,step=8",
    "sift-dense-vlad": "sift-dense-vlad:k=4,step=8",
    "sift-dense-fv": "sift-dense-fv:k=4,pca=16,step=8",
    "surf-bow": "surf-bow:k=8",
    "surf-dense-bow": "surf-dense-bow:k=8,step=8",
    "cnn": "cnn:tf_efficientnet_lite0",
}
#: registered extractors that compute nothing from pixels, with the reason they are exempt
NOT_FROM_PIXELS = {
    "precomputed": "reads published feature files matched to a dataset's image paths; it never sees pixels",
}
