"""Readers for the official layouts of the benchmark datasets, and torchvision wrappers.

:func:`read_any` looks at a folder and picks the reader (:func:`detect_layout`):

=====================  ==============================================================================
layout                 recognised by / what becomes of it
=====================  ==============================================================================
``manifest``           ``MANIFEST.tsv`` (the shared and staged copies): :func:`folder.read_manifest_dataset`
``cub200-2011``        ``images.txt``, ``train_test_split.txt``, ``image_class_labels.txt``,
                       ``classes.txt`` (+ optional ``bounding_boxes.txt``), in the folder or in
                       ``CUB_200_2011/``. Groups train/test from the official split; labels are the
                       class folder names without their ``NNN.`` prefix; bounding boxes are kept
                       (``AnnotatedDataset.boxes``) for the ``given`` protocol's ``crop`` option.
``indoor67``           ``TrainImages.txt`` and ``TestImages.txt`` (MIT Indoor-67, Quattoni & Torralba
                       2009: 80 train / 20 test per class); images under ``Images/`` or the folder
                       itself; images listed in neither file are not read.
``caltech101-tree``    a ``101_ObjectCategories/<class>/*.jpg`` tree (the original archive, or
                       torchvision's ``caltech101/`` folder). One group ``all``; ``BACKGROUND_Google``
                       is read and left out by the Caltech protocols (``exclude``).
``flowers102``         ``jpg/``, ``imagelabels.mat`` and ``setid.mat`` (torchvision's ``flowers-102/``):
                       groups train/val/test from setid.mat (10 + 10 per class, rest test); labels are
                       the flower names torchvision lists.
``oxford-pets``        ``images/`` and ``annotations/{trainval,test}.txt`` (torchvision's
                       ``oxford-iiit-pet/``): trainval is read as group ``train`` (so the dataset is not
                       taken for a domain dataset), test as ``test``; 37 breeds.
``sun397``             ``ClassName.txt`` (torchvision's ``SUN397/``): every ``sun_*.jpg`` in group
                       ``all``, labelled as torchvision does (``abbey``, ``bakery/shop``). torchvision
                       downloads only the images and class list, **not** the official partitions
                       (``Partitions.zip``: ``Training_01.txt`` ... ``Testing_10.txt``, 50 + 50 images
                       per class each); put those files next to ``ClassName.txt`` or in a
                       ``Partitions/`` folder there and the ``sun397-partitions`` protocol uses them.
``feature-files``      a folder of ``.mat``/``.npz``/``.npy``/``.parquet`` feature files and no sub-folders
                       (published releases): one domain per file, records are the files' rows
                       (:mod:`featbench.datasets.feature_files`; extract with ``precomputed``)
``imagefolder``        anything else: ``<group>/<class>/<file>`` or ``<class>/<file>``
=====================  ==============================================================================

Every record's ``uid`` is the sha256 of its file (hashed with a few threads); reading a large
tree therefore reads every byte once (SUN-397: about 37 GB, minutes).

torchvision wrappers (``tv_caltech101``, ...): :mod:`.torchvision_sets`.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from featbench.errors import FeatbenchError
from featbench.registry import Registry

from .folder import (IMAGE_EXTENSIONS, Dataset, ImageRecord, read_image_folder,
                     read_manifest_dataset, sha256_file)
from .feature_files import is_feature_folder, read_feature_dataset
from .images import read_image
from .info import DatasetInfo

Box = tuple[float, float, float, float]  # x, y, width, height in pixels (CUB's bounding_boxes.txt)


@dataclasses.dataclass
class AnnotatedDataset(Dataset):
    """A :class:`Dataset` with what some official layouts add."""

    #: relpath -> bounding box (x, y, w, h), CUB-200-2011
    boxes: dict[str, Box] = dataclasses.field(default_factory=dict, repr=False)
    #: official partitions as (train relpaths, test relpaths), SUN-397
    partitions: list[tuple[frozenset[str], frozenset[str]]] = dataclasses.field(default_factory=list, repr=False)
    layout: str = ""


# -- hashing -------------------------------------------------------------------------------------

def hash_files(paths: Sequence[Path], workers: int = 8) -> list[str]:
    """sha256 of each file; hashlib releases the GIL, so threads overlap reading and hashing."""
    if len(paths) < 64:
        return [sha256_file(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(sha256_file, paths, chunksize=32))


def _records(items: list[tuple[Path, str, str]], root: Path) -> list[ImageRecord]:
    """(path, label, group) -> records with sha256 uids and relpaths relative to ``root``."""
    try:
        uids = hash_files([p for p, _, _ in items])
    except OSError as exc:  # unreadable (permissions), a FIFO would block: not an image file
        raise FeatbenchError(f"{exc.filename or root}: cannot be read ({exc.strerror or exc})") from None
    return [ImageRecord(uid=uid, label=label, group=group, relpath=p.relative_to(root).as_posix(), path=str(p))
            for (p, label, group), uid in zip(items, uids)]


def _is_image(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")


def _check_listed(missing: list[str], where: Path) -> None:
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise FeatbenchError(f"{where}: {len(missing)} listed image(s) missing: {shown}")


# -- layouts ---------------------------------------------------------------------------------------

def _cub_root(folder: Path) -> Path | None:
    for cand in (folder, folder / "CUB_200_2011"):
        if all((cand / f).is_file() for f in ("images.txt", "train_test_split.txt", "image_class_labels.txt")):
            return cand
    return None


def _caltech_root(folder: Path) -> Path | None:
    if folder.name == "101_ObjectCategories":
        return folder
    for cand in (folder / "101_ObjectCategories", folder / "caltech101" / "101_ObjectCategories"):
        if cand.is_dir():
            return cand
    return None


def _sub(folder: Path, name: str, *needed: str) -> Path | None:
    for cand in (folder, folder / name):
        if all((cand / n).exists() for n in needed):
            return cand
    return None


#: layout name -> reader ``(folder, name, verify) -> Dataset``; ``detect(folder) -> bool`` in each entry's
#: metadata. :func:`detect_layout` tries them in registration order; ``imagefolder`` (anything) is last.
LAYOUTS: Registry[Callable[..., Dataset]] = Registry("dataset layout")


def register_layout(name: str, detect: Callable[[Path], Any], info: DatasetInfo | None = None,
                    summary: str = "") -> Callable[[Any], Any]:
    """Decorator: register a reader for the folders ``detect`` recognises (by file names only: cheap).

    ``info``: what the layout tells about the dataset (family, default protocol, metric, anchors);
    without it the dataset is looked up by name (:func:`featbench.datasets.info.dataset_info`).
    """
    return LAYOUTS.register(name, summary=summary, detect=detect, info=info)


@register_layout("manifest", lambda f: (f / "MANIFEST.tsv").is_file(),
                 summary="MANIFEST.tsv (relpath, class, split, bytes, sha256): the shared and staged copies")
def read_manifest(folder: Path, name: str, verify: bool = False) -> Dataset:
    return read_manifest_dataset(folder, name, verify=verify)


def detect_layout(folder: Path) -> str:
    """Which reader :func:`read_any` would use for ``folder`` (cheap: looks at file names only)."""
    folder = Path(folder)
    for name, entry in LAYOUTS.items():
        if entry.meta["detect"](folder):
            return name
    return "imagefolder"


def read_any(folder: str | os.PathLike, name: str | None = None, verify: bool = False) -> Dataset:
    """Read ``folder`` with the reader its layout calls for (module docstring)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FeatbenchError(f"dataset folder not found: {folder}")
    return LAYOUTS.get(detect_layout(folder))(folder, name or folder.name, verify=verify)


def _dataset(name: str, records: list[ImageRecord], root: Path, layout: str, **extra: Any) -> AnnotatedDataset:
    if not records:
        raise FeatbenchError(f"{root}: no images found ({layout} layout)")
    info = dataclasses.replace(LAYOUTS.entry(layout).meta["info"], layout=layout)
    return AnnotatedDataset(name=name, records=records, root=str(root), source=layout, layout=layout, info=info,
                            **extra)


def _table(path: Path, min_cols: int) -> list[list[str]]:
    rows = []
    with open(path) as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            parts = line.split()
            if len(parts) < min_cols:
                raise FeatbenchError(f"{path}:{n}: expected {min_cols} columns, got: {line.strip()!r}")
            rows.append(parts)
    return rows


@register_layout("cub200-2011", _cub_root, DatasetInfo("fine-grained", anchors_key="cub200"))
def read_cub200(folder: Path, name: str, verify: bool = False) -> AnnotatedDataset:
    """CUB-200-2011 official layout (Wah et al. 2011): train/test from train_test_split.txt, boxes kept."""
    root = _cub_root(folder)
    assert root is not None
    paths = {i: p for i, p in (r[:2] for r in _table(root / "images.txt", 2))}
    split = {i: s for i, s in (r[:2] for r in _table(root / "train_test_split.txt", 2))}
    boxes_file = root / "bounding_boxes.txt"
    boxes = {r[0]: tuple(float(v) for v in r[1:5]) for r in _table(boxes_file, 5)} if boxes_file.is_file() else {}
    images = root / "images"
    items, missing, box_by_path = [], [], {}
    for image_id, rel in sorted(paths.items(), key=lambda kv: kv[1]):
        if image_id not in split:
            raise FeatbenchError(f"{root / 'train_test_split.txt'}: no entry for image id {image_id} ({rel})")
        path = images / rel
        if not path.is_file():
            missing.append(rel)
            continue
        label = re.sub(r"^\d+\.", "", rel.split("/")[0])
        items.append((path, label, "train" if split[image_id] == "1" else "test"))
        if image_id in boxes:
            box_by_path[path.relative_to(folder).as_posix()] = boxes[image_id]
    _check_listed(missing, root / "images.txt")
    return _dataset(name, _records(items, folder), folder, "cub200-2011", boxes=box_by_path)


@register_layout("indoor67", lambda f: (f / "TrainImages.txt").is_file() and (f / "TestImages.txt").is_file(),
                 DatasetInfo("scene", headline_metric="mean_class_acc", anchors_key="indoor67"))
def read_indoor67(folder: Path, name: str, verify: bool = False) -> AnnotatedDataset:
    """MIT Indoor-67 with the official TrainImages.txt / TestImages.txt (80 + 20 per class)."""
    base = folder / "Images" if (folder / "Images").is_dir() else folder
    items, missing, seen = [], [], set()
    for group, listing in (("train", "TrainImages.txt"), ("test", "TestImages.txt")):
        for line in (folder / listing).read_text().splitlines():
            rel = line.strip().replace("\\", "/")
            if not rel or rel in seen:
                continue
            seen.add(rel)
            path = base / rel
            if not path.is_file():
                missing.append(rel)
                continue
            items.append((path, rel.split("/")[0], group))
    _check_listed(missing, folder)
    return _dataset(name, _records(items, folder), folder, "indoor67")


@register_layout("caltech101-tree", _caltech_root,
                 DatasetInfo("object", "caltech101-30", "mean_class_acc", anchors_key="caltech101"))
def read_caltech101_tree(folder: Path, name: str, verify: bool = False) -> AnnotatedDataset:
    """``101_ObjectCategories/<class>/*.jpg`` (Fei-Fei et al. 2004); one group ``all``."""
    cats = _caltech_root(folder)
    assert cats is not None
    items = [(p, d.name, "all") for d in sorted(cats.iterdir()) if d.is_dir()
             for p in sorted(d.iterdir()) if _is_image(p)]
    return _dataset(name, _records(items, folder), folder, "caltech101-tree")


def flower_names() -> list[str]:
    """The 102 flower names, as torchvision lists them (``class_NNN`` when it does not)."""
    try:
        from torchvision.datasets import Flowers102

        names = list(getattr(Flowers102, "classes", []))
    except Exception:  # pragma: no cover - torchvision is a dependency
        names = []
    return names if len(names) == 102 else [f"class_{i:03d}" for i in range(1, 103)]


@register_layout("flowers102", lambda f: _sub(f, "flowers-102", "jpg", "imagelabels.mat", "setid.mat"),
                 DatasetInfo("fine-grained"))
def read_flowers102(folder: Path, name: str, verify: bool = False) -> AnnotatedDataset:
    """Oxford Flowers-102 (Nilsback & Zisserman 2008): groups train/val/test from setid.mat."""
    from scipy.io import loadmat

    base = _sub(folder, "flowers-102", "jpg", "imagelabels.mat", "setid.mat")
    assert base is not None
    labels = np.asarray(loadmat(base / "imagelabels.mat", squeeze_me=True)["labels"]).ravel()
    setid = loadmat(base / "setid.mat", squeeze_me=True)
    names = flower_names()
    items, missing = [], []
    for group, key in (("train", "trnid"), ("val", "valid"), ("test", "tstid")):
        for image_id in np.asarray(setid[key]).ravel().tolist():
            path = base / "jpg" / f"image_{int(image_id):05d}.jpg"
            if not path.is_file():
                missing.append(path.name)
                continue
            items.append((path, names[int(labels[int(image_id) - 1]) - 1], group))
    _check_listed(missing, base / "setid.mat")
    return _dataset(name, _records(items, folder), folder, "flowers102")


@register_layout("oxford-pets", lambda f: _sub(f, "oxford-iiit-pet", "images", "annotations/trainval.txt",
                                               "annotations/test.txt"), DatasetInfo("fine-grained"))
def read_oxford_pets(folder: Path, name: str, verify: bool = False) -> AnnotatedDataset:
    """Oxford-IIIT Pets (Parkhi et al. 2012): 37 breeds, trainval (read as ``train``) / test."""
    base = _sub(folder, "oxford-iiit-pet", "images", "annotations/trainval.txt", "annotations/test.txt")
    assert base is not None
    items, missing = [], []
    for group, listing in (("train", "trainval.txt"), ("test", "test.txt")):
        for row in _table(base / "annotations" / listing, 2):
            image_id = row[0]
            path = base / "images" / f"{image_id}.jpg"
            if not path.is_file():
                missing.append(path.name)
                continue
            items.append((path, image_id.rsplit("_", 1)[0], group))
    _check_listed(missing, base / "annotations")
    return _dataset(name, _records(items, folder), folder, "oxford-pets")


def find_sun397_partitions(base: Path) -> list[tuple[frozenset[str], frozenset[str]]]:
    """Official partitions (Training_NN.txt, Testing_NN.txt) next to ClassName.txt or in Partitions/."""
    for cand in (base, base / "Partitions", base.parent / "Partitions"):
        out = []
        for k in range(1, 100):
            tr, te = cand / f"Training_{k:02d}.txt", cand / f"Testing_{k:02d}.txt"
            if not (tr.is_file() and te.is_file()):
                break
            read = lambda f: frozenset(l.strip().lstrip("/") for l in f.read_text().splitlines() if l.strip())  # noqa: E731
            out.append((read(tr), read(te)))
        if out:
            return out
    return []


@register_layout("sun397", lambda f: _sub(f, "SUN397", "ClassName.txt"),
                 DatasetInfo("scene", "sun397-partitions", "mean_class_acc", anchors_key="sun397"))
def read_sun397(folder: Path, name: str, verify: bool = False) -> AnnotatedDataset:
    """SUN-397 (Xiao et al. 2010) as torchvision lays it out; official partitions when present."""
    base = _sub(folder, "SUN397", "ClassName.txt")
    assert base is not None
    classes = [c.strip() for c in (base / "ClassName.txt").read_text().splitlines() if c.strip()]
    items = []
    for cls in classes:  # "/a/abbey" -> folder a/abbey, label "abbey" (torchvision's c[3:])
        rel = cls.lstrip("/")
        d = base / rel
        if d.is_dir():
            items += [(p, rel[2:], "all") for p in sorted(d.glob("sun_*.jpg"))]
    partitions = find_sun397_partitions(base)
    # relpaths relative to the SUN397 folder, as the partition files write them
    return _dataset(name, _records(items, base), base, "sun397", partitions=partitions)


# -- bounding-box crops -----------------------------------------------------------------------------

def crop_box(image: np.ndarray, box: Box, factor: float) -> np.ndarray:
    """The box (x, y, w, h) enlarged ``factor`` times about its centre, clipped to the image."""
    h, w = image.shape[:2]
    x, y, bw, bh = box
    cx, cy = x + bw / 2.0, y + bh / 2.0
    nw, nh = bw * factor, bh * factor
    edge = lambda v: int(np.floor(v + 0.5))  # noqa: E731  (round half up, the same on both sides)
    x0, x1 = max(0, edge(cx - nw / 2)), min(w, edge(cx + nw / 2))
    y0, y1 = max(0, edge(cy - nh / 2)), min(h, edge(cy + nh / 2))
    if x1 <= x0 or y1 <= y0:
        return image
    return np.ascontiguousarray(image[y0:y1, x0:x1])


@dataclasses.dataclass(frozen=True)
class CropLoader:
    """``ImageRecord.loader`` that decodes a file and crops it (picklable for DataLoader workers)."""

    path: str
    box: Box
    factor: float

    def __call__(self) -> np.ndarray:
        return crop_box(read_image(self.path), self.box, self.factor)


def crop_record(rec: ImageRecord, box: Box, factor: float) -> ImageRecord:
    """A record for the cropped image: its own uid (so the cache keeps crops apart) and loader."""
    tag = f"crop:{factor:g}:{','.join(f'{v:g}' for v in box)}"
    uid = hashlib.sha256(f"{rec.uid}|{tag}".encode()).hexdigest()
    return ImageRecord(uid=uid, label=rec.label, group=rec.group, relpath=f"{rec.relpath}#{tag}",
                       path=rec.path, loader=CropLoader(str(rec.path), box, float(factor)))


def crop_records(dataset: Dataset, records: list[ImageRecord], factor: float) -> list[ImageRecord]:
    boxes = getattr(dataset, "boxes", None) or {}
    if not boxes:
        raise FeatbenchError(f"dataset '{dataset.name}' has no bounding boxes, so it cannot be cropped "
                             "(the CUB-200-2011 official layout has bounding_boxes.txt; the staged copy does not)")
    if factor <= 0:
        raise FeatbenchError(f"crop factor must be positive, not {factor}")
    missing = [r.relpath for r in records if r.relpath not in boxes]
    if missing:
        raise FeatbenchError(f"dataset '{dataset.name}': {len(missing)} image(s) have no bounding box, e.g. {missing[0]}")
    return [crop_record(r, boxes[r.relpath], factor) for r in records]


@register_layout("feature-files", is_feature_folder, DatasetInfo("domain", layout="feature-files"),
                 summary="a folder of .mat/.npz/.npy/.parquet feature files, one per domain (published releases)")
def read_feature_files(folder: Path, name: str, verify: bool = False) -> Dataset:
    """Records are the files' rows (:mod:`featbench.datasets.feature_files`; extract with ``precomputed``)."""
    return read_feature_dataset(folder, name)


@register_layout("imagefolder", lambda f: True, summary="<group>/<class>/<file> or <class>/<file> (anything else)")
def read_imagefolder(folder: Path, name: str, verify: bool = False) -> Dataset:
    return read_image_folder(folder, name)
