"""Dataset readers: the ``<split-or-domain>/<class>/<file>`` + ``MANIFEST.tsv`` layout and ImageFolder trees.

A :class:`Dataset` is a flat list of :class:`ImageRecord` with a ``group`` each (a split such
as ``train``/``test`` or a domain such as ``amazon``). Every record carries a content identity
``uid`` (the file's sha256), which keys the feature cache: renaming or moving files keeps the
cache, editing an image invalidates it.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from featbench.errors import FeatbenchError

from .images import read_image
from .info import DatasetInfo, dataset_info

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SPLIT_NAMES = {"train", "test", "val", "valid", "validation"}


@dataclasses.dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image: where it is, what it shows, and its content identity."""

    uid: str  # sha256 of the file bytes (or of the pixels for in-memory images)
    label: str
    group: str  # split or domain
    relpath: str
    path: str | None = None
    loader: Callable[[], np.ndarray] | None = dataclasses.field(default=None, repr=False)

    def load(self) -> np.ndarray:
        """Decoded RGB uint8 pixels; raises ImageDecodeError naming the file on bad input."""
        if self.loader is not None:
            return self.loader()
        return read_image(self.path)


@dataclasses.dataclass
class Dataset:
    name: str
    records: list[ImageRecord]
    root: str | None = None
    family: str = ""  # '' = the family in ``info``
    #: sha256 over (relpath, uid) of every record: the dataset identity stored with each result.
    identity: str = ""
    source: str = ""  # "manifest", "imagefolder" or "builtin"
    #: family, default protocol, headline metric, layout, anchors key (looked up by name when not given)
    info: DatasetInfo | None = None

    def __post_init__(self) -> None:
        if self.info is None:
            self.info = dataset_info(self.name, layout=self.source)
        if self.family and self.family != self.info.family:
            self.info = dataclasses.replace(self.info, family=self.family)
        self.family = self.info.family
        if not self.identity:
            h = hashlib.sha256()
            for r in sorted(self.records, key=lambda r: r.relpath):
                h.update(f"{r.relpath}\t{r.uid}\n".encode())
            self.identity = h.hexdigest()[:16]

    @property
    def groups(self) -> list[str]:
        return sorted({r.group for r in self.records})

    @property
    def classes(self) -> list[str]:
        return sorted({r.label for r in self.records})

    @property
    def is_domain_dataset(self) -> bool:
        """True when the top-level folders are domains rather than train/test splits."""
        return not set(self.groups) <= SPLIT_NAMES | {"all"}

    def in_group(self, group: str) -> list[ImageRecord]:
        if group not in self.groups:
            raise FeatbenchError(
                f"dataset '{self.name}' has no split or domain '{group}'; it has: {', '.join(self.groups)}"
            )
        return [r for r in self.records if r.group == group]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "root": self.root,
            "source": self.source,
            "identity": self.identity,
            "images": len(self.records),
            "classes": len(self.classes),
            "groups": dict(Counter(r.group for r in self.records)),
        }


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest_dataset(root: Path, name: str, verify: bool = False) -> Dataset:
    """Read ``root/MANIFEST.tsv`` (relpath, class, split, bytes, sha256); optionally re-hash each file."""
    manifest = root / "MANIFEST.tsv"
    records, problems = [], []
    with open(manifest, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing_cols = {"relpath", "class", "split", "sha256"} - set(reader.fieldnames or [])
        if missing_cols:
            raise FeatbenchError(f"{manifest}: missing column(s) {', '.join(sorted(missing_cols))}")
        for row in reader:
            path = root / row["relpath"]
            if not path.is_file():
                problems.append(f"{row['relpath']}: listed in MANIFEST.tsv but missing")
                continue
            if verify and sha256_file(path) != row["sha256"]:
                problems.append(f"{row['relpath']}: sha256 differs from MANIFEST.tsv")
                continue
            records.append(ImageRecord(uid=row["sha256"], label=row["class"], group=row["split"],
                                       relpath=row["relpath"], path=str(path)))
    if problems:
        shown = "; ".join(problems[:5]) + (f" (+{len(problems) - 5} more)" if len(problems) > 5 else "")
        raise FeatbenchError(f"{manifest}: {len(problems)} problem(s): {shown}")
    return Dataset(name=name, records=records, root=str(root), source="manifest")


def _image_files(folder: Path) -> Iterable[Path]:
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."):
            yield p


def read_image_folder(root: Path, name: str) -> Dataset:
    """Read ``root/<group>/<class>/<file>`` or, with no group level, ``root/<class>/<file>`` (group 'all')."""
    subdirs = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    if not subdirs:
        raise FeatbenchError(f"{root}: no class or split folders inside")
    two_level = all(any(c.is_dir() for c in d.iterdir()) and not any(_image_files(d)) for d in subdirs)
    records = []
    for top in subdirs:
        class_dirs = [(top.name, c) for c in sorted(top.iterdir()) if c.is_dir()] if two_level else [("all", top)]
        for group, class_dir in class_dirs:
            for f in _image_files(class_dir):
                records.append(ImageRecord(uid=sha256_file(f), label=class_dir.name, group=group,
                                           relpath=str(f.relative_to(root)), path=str(f)))
    if not records:
        raise FeatbenchError(f"{root}: no images found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return Dataset(name=name, records=records, root=str(root), source="imagefolder")


def read_dataset(root: str | os.PathLike, name: str | None = None, verify: bool = False) -> Dataset:
    """Read a dataset folder: MANIFEST.tsv layout when present, else an ImageFolder tree."""
    root = Path(root)
    if not root.is_dir():
        raise FeatbenchError(f"dataset folder not found: {root}")
    name = name or root.name
    if (root / "MANIFEST.tsv").is_file():
        return read_manifest_dataset(root, name, verify=verify)
    return read_image_folder(root, name)


def find_dataset(name: str, data_roots: list[str]) -> Path:
    """The first ``ROOT/name`` folder among the data roots; a clear error when there is none."""
    for root in data_roots:
        candidate = Path(root).expanduser() / name
        if candidate.is_dir():
            return candidate
    searched = ", ".join(str(Path(r).expanduser()) for r in data_roots) or "(no data root given)"
    raise FeatbenchError(f"dataset '{name}' not found under data root(s): {searched} (use --data-root DIR)")
