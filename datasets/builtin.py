"""Datasets every install already has: real photos shipped inside scikit-image.

* ``skimage_faces``: scikit-image's ``lfw_subset`` (100 LFW face crops and 100 non-face
  patches, 25x25 grayscale), a 2-class object task, split 50/50 per class by seed.
* ``skimage_textures``: non-overlapping 64x64 patches cut from the texture photos ``brick``,
  ``grass`` and ``gravel`` (512x512 each); training patches come from the top half of each
  photo and test patches from the bottom half, so no pixel is shared between the splits.

They make ``featbench run`` work with no arguments and no download.
"""
from __future__ import annotations

import hashlib

import numpy as np

from .folder import Dataset, ImageRecord

TEXTURES = ("brick", "grass", "gravel")
PATCH = 64


def _record(pixels: np.ndarray, label: str, group: str, relpath: str) -> ImageRecord:
    rgb = np.ascontiguousarray(np.repeat(pixels[:, :, None], 3, axis=2) if pixels.ndim == 2 else pixels)
    uid = hashlib.sha256(rgb.tobytes() + repr(rgb.shape).encode()).hexdigest()
    return ImageRecord(uid=uid, label=label, group=group, relpath=relpath, loader=lambda a=rgb: a)


def skimage_faces() -> Dataset:
    from skimage import data

    images = data.lfw_subset()  # float in [0, 1], 100 faces then 100 non-faces
    records = []
    for i, img in enumerate(images):
        label = "face" if i < 100 else "non_face"
        pixels = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
        records.append(_record(pixels, label, "all", f"{label}/{i:03d}.png"))
    return Dataset(name="skimage_faces", records=records, family="object", source="builtin",
                   root="skimage.data.lfw_subset")


def skimage_textures() -> Dataset:
    from skimage import data

    records = []
    for name in TEXTURES:
        img = getattr(data, name)()
        h, w = img.shape[:2]
        for y in range(0, h - PATCH + 1, PATCH):
            group = "train" if y + PATCH <= h // 2 else "test"
            for x in range(0, w - PATCH + 1, PATCH):
                patch = img[y:y + PATCH, x:x + PATCH]
                records.append(_record(patch, name, group, f"{group}/{name}/{y:03d}_{x:03d}.png"))
    return Dataset(name="skimage_textures", records=records, family="scene", source="builtin",
                   root="skimage.data (" + ", ".join(TEXTURES) + ")")


BUILTIN = {"skimage_faces": skimage_faces, "skimage_textures": skimage_textures}
