"""CNN input preprocessing: decode, resize, centre crop and views, as the model's metadata says.

Runs in the DataLoader's worker processes (:class:`ViewsDataset`), so it holds no torch module
state. :class:`Preprocess` comes from the model's own metadata (:func:`model_preprocess`:
torchvision's weights transforms, timm's ``resolve_data_config``); the resize, centre crop and
ten-crop are torchvision's v2 transforms on PIL images (:func:`prepare_views`). With ``draft``
(the extractor's ``draft=true``) a JPEG file is decoded at a reduced DCT scale when that still
leaves at least ``resize`` pixels on its shorter side (PIL ``draft``, :func:`decode_reduced`).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from featbench.datasets.images import ImageDecodeError, open_image, read_file_bytes, to_rgb_uint8
from featbench.errors import FeatbenchError



@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize`` (both sides when ``squash``), centre crop ``crop``,
    then ``(x / 255 - mean) / std`` per RGB channel."""

    crop: int
    resize: int
    interpolation: str  # a PIL resampling name: bilinear, bicubic, ...
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    squash: bool = False

    def scaled(self, size: int | None) -> "Preprocess":
        if not size or size == self.crop:
            return self
        return dataclasses.replace(self, crop=size, resize=round(size * self.resize / self.crop))


def model_preprocess(model: str, src: str, tv_weights: str | None = None) -> Preprocess:
    """Preprocessing from the model's metadata (also used for random or file weights)."""
    if src == "torchvision":
        from torchvision.models import get_model_weights

        t = get_model_weights(model)[tv_weights or "DEFAULT"].transforms()
        return Preprocess(crop=t.crop_size[0], resize=t.resize_size[0], interpolation=t.interpolation.value,
                          mean=tuple(t.mean), std=tuple(t.std))
    from timm.data import resolve_data_config
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model)
    data = resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {}, use_test_size=True)
    if data["crop_mode"] not in ("center", "squash"):
        raise FeatbenchError(f"cnn:{model}: timm crop_mode '{data['crop_mode']}' is not supported")
    crop = data["input_size"][-1]
    return Preprocess(crop=crop, resize=math.floor(crop / data["crop_pct"]), interpolation=data["interpolation"],
                      mean=tuple(data["mean"]), std=tuple(data["std"]), squash=data["crop_mode"] == "squash")


#: Longest side / shortest side beyond which an image is cut to its centre before resizing.
MAX_ASPECT = 8


def decode_reduced(path: str, min_side: int | None) -> Image.Image:
    """Decode an image file like :func:`featbench.datasets.images.read_image` (the same checks: a
    regular file, the pixel budget), but let JPEG's DCT scaling shrink it by up to 8x as long as
    the shorter side stays >= ``min_side`` (``None``: full decoding)."""
    return decode_bytes(read_file_bytes(path), str(path), min_side)


def decode_bytes(data: bytes, name: str, min_side: int | None) -> Image.Image:
    """:func:`decode_reduced` on a file's bytes already read (``name`` for messages); ``featbench
    speed`` times reading and decoding apart."""
    with open_image(data, name) as img:
        if img.format == "JPEG" and min_side is not None:
            w, h = img.size
            scale = min_side / min(w, h)
            img.draft(None, (math.ceil(w * scale), math.ceil(h * scale)))
        img.load()
        return Image.fromarray(to_rgb_uint8(img))


def trim_strip(img: Image.Image, prep: Preprocess) -> Image.Image:
    """Cut an image more elongated than ``MAX_ASPECT``:1 to its central ``MAX_ASPECT``:1 part, which
    holds every pixel of the centre crop: resizing a 65535 x 1 strip's shorter side to 256 would
    otherwise allocate 16.7 million x 256 pixels."""
    w, h = img.size
    if prep.squash or max(w, h) <= MAX_ASPECT * min(w, h):
        return img
    keep = MAX_ASPECT * min(w, h)
    if w > h:
        return img.crop(((w - keep) // 2, 0, (w - keep) // 2 + keep, h))
    return img.crop((0, (h - keep) // 2, w, (h - keep) // 2 + keep))


def load_image(item: Any, min_side: int | None) -> Image.Image:
    """An item as a PIL RGB image: an RGB uint8 array, or a record with ``.load()``. A record
    that is a plain file on disk (``path`` set, no custom ``loader``) is decoded reduced."""
    if isinstance(item, np.ndarray):
        return Image.fromarray(item)
    path = getattr(item, "path", None)
    if path and getattr(item, "loader", None) is None:
        return decode_reduced(path, min_side)
    return Image.fromarray(item.load())


def view_transforms(prep: Preprocess):
    """torchvision v2 transforms for ``prep``: (resize, centre crop, five crop)."""
    from torchvision.transforms import v2

    interpolation = v2.InterpolationMode(prep.interpolation.lower())
    size = (prep.resize, prep.resize) if prep.squash else prep.resize
    return (v2.Resize(size, interpolation=interpolation, antialias=True), v2.CenterCrop(prep.crop),
            v2.FiveCrop(prep.crop))


def prepare_views(item: Any, prep: Preprocess, aug: str | None, draft: bool = False) -> np.ndarray:
    """The crops the network sees for one item: ``uint8 [views, crop, crop, 3]``.

    torchvision's ``Resize(resize)`` (shorter side to ``resize``; both sides with ``squash``) and
    ``CenterCrop(crop)`` (black padding when the crop is larger than the image) on the PIL image;
    ``flip`` adds the mirror; ``10crop`` the centre crop, the four corner crops (``FiveCrop``) and
    their mirrors, in that order. Strips beyond ``MAX_ASPECT``:1 are cut first (:func:`trim_strip`).
    ``draft`` lets a large JPEG decode reduced (:func:`decode_reduced`); off, it decodes in full.
    """
    from torchvision.transforms.v2 import functional as F

    resize, center_crop, five_crop = view_transforms(prep)
    img = resize(trim_strip(load_image(item, prep.resize if draft else None), prep))
    crops = [center_crop(img)]
    if aug == "10crop":  # corners of the image padded (as CenterCrop pads) to at least the crop
        w, h = img.size
        padded = F.center_crop(img, [max(h, prep.crop), max(w, prep.crop)])
        crops += list(five_crop(padded))[:4]  # top-left, top-right, bottom-left, bottom-right
    arrays = [np.asarray(c) for c in crops]
    if aug in ("flip", "10crop"):
        arrays += [a[:, ::-1] for a in arrays]
    return np.stack(arrays)


class ViewsDataset(torch.utils.data.Dataset):
    """Items -> ``(index, views, None)``, or ``(index, None, message)`` for an image that does not
    decode: the main process learns which image failed and why, not a worker's traceback."""

    def __init__(self, items: Sequence[Any], prep: Preprocess, aug: str | None, draft: bool = False) -> None:
        self.items, self.prep, self.aug, self.draft = items, prep, aug, draft

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, prepare_views(self.items[i], self.prep, self.aug, self.draft), None
        except ImageDecodeError as exc:
            return i, None, str(exc)


def collate_views(batch: list[tuple[int, np.ndarray | None, str | None]]
             ) -> tuple[list[int], torch.Tensor | None, dict[int, str]]:
    """Stack the views of the items that decoded; keep the reason for those that did not."""
    good = [(i, views) for i, views, err in batch if err is None]
    errors = {i: err for i, _, err in batch if err is not None}
    stacked = torch.from_numpy(np.stack([views for _, views in good])) if good else None
    return [i for i, _ in good], stacked, errors
