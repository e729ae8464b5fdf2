"""Dataset readers: the ``<split-or-domain>/<class>/<file>`` + ``MANIFEST.tsv`` layout and ImageFolder trees.

A :class:`Dataset` is a flat list of :class:`ImageRecord` with a ``group`` each (a split such
as ``train``/``test`` or a domain such as ``amazon``). Every record carries a content identity
``uid`` (the file's sha256), which keys the feature cache: renaming or moving files keeps the
cache, editing an image invalidates it.
"""
from __future__ import annotations

import csv
import dataclasses
import errno
import hashlib
import os
import stat
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
    #: entries named like images that were left out when listing, ``{"relpath", "reason"}`` each
    #: (a folder named ``x.jpg``, a symlink loop, a FIFO); run.json and the report list them.
    dropped: list[dict[str, str]] = dataclasses.field(default_factory=list)
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


def printable(name: str) -> str:
    """``name`` with bytes that are not UTF-8 (kept by Python as surrogates) shown as ``\\xNN``."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _entry_problem(p: Path) -> str | None:
    """Why an entry named like an image is not an image file, or None for a regular file."""
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symlink loop"
        if p.is_symlink():
            return "broken symlink"
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISREG(mode):
        return None
    return {True: "a folder named like an image"}.get(stat.S_ISDIR(mode)) or \
        ("a FIFO, not an image file" if stat.S_ISFIFO(mode) else "not a regular file (socket or device)")


class Listing:
    """What listing a dataset folder found: image files, entries left out (with the reason) and
    the problems that stop a run before any work (names that are not UTF-8, empty class folders)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dropped: list[dict[str, str]] = []
        self.bad_names: list[str] = []
        self.empty_classes: list[str] = []

    def rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix()

    @staticmethod
    def entries(folder: Path) -> list[Path]:
        try:
            return sorted(folder.iterdir())
        except OSError as exc:
            raise FeatbenchError(f"{printable(str(folder))}: cannot list folder ({exc.strerror or exc})") from None

    def image_files(self, folder: Path) -> list[Path]:
        files = []
        for p in self.entries(folder):
            if p.name.startswith(".") or p.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            if not _is_utf8(p.name):
                self.bad_names.append(printable(self.rel(p)))
                continue
            problem = _entry_problem(p)
            if problem:
                self.dropped.append({"relpath": self.rel(p), "reason": problem})
            else:
                files.append(p)
        return files

    def check(self) -> None:
        """Raise the one-line error for names that cannot be encoded and for empty class folders."""
        if self.bad_names:
            shown = ", ".join(self.bad_names[:3]) + (f" (+{len(self.bad_names) - 3} more)" if len(self.bad_names) > 3 else "")
            raise FeatbenchError(f"{printable(str(self.root))}: {len(self.bad_names)} file or folder name(s) are not "
                                 f"valid UTF-8: {shown}; rename them (e.g. convmv -f latin1 -t utf8)")
        if self.empty_classes:
            shown = ", ".join(self.empty_classes[:5]) + (f" (+{len(self.empty_classes) - 5} more)"
                                                         if len(self.empty_classes) > 5 else "")
            raise FeatbenchError(f"{self.root}: {len(self.empty_classes)} empty class folder(s) with no image file: "
                                 f"{shown}; add images or remove the folder(s)")


def _image_files(folder: Path) -> Iterable[Path]:
    """Regular image files in ``folder`` (what :class:`Listing` keeps; nothing recorded)."""
    return Listing(folder).image_files(folder)


def read_image_folder(root: Path, name: str) -> Dataset:
    """Read ``root/<group>/<class>/<file>`` or, with no group level, ``root/<class>/<file>`` (group 'all').

    Entries named like images that are not image files are dropped and recorded in
    ``Dataset.dropped``; names that are not UTF-8 and empty class folders are an error.
    """
    listing = Listing(root)
    subdirs = [d for d in listing.entries(root) if d.is_dir() and not d.name.startswith(".")]
    if not subdirs:
        raise FeatbenchError(f"{root}: no class or split folders inside")
    bad_dirs = [printable(listing.rel(d)) for d in subdirs if not _is_utf8(d.name)]
    two_level = all(any(c.is_dir() for c in listing.entries(d)) and not any(_image_files(d)) for d in subdirs)
    records = []
    for top in subdirs:
        class_dirs = [(top.name, c) for c in listing.entries(top) if c.is_dir() and not c.name.startswith(".")
                      ] if two_level else [("all", top)]
        bad_dirs += [printable(listing.rel(c)) for _, c in class_dirs if two_level and not _is_utf8(c.name)]
        for group, class_dir in class_dirs:
            files = listing.image_files(class_dir)
            if not files:
                listing.empty_classes.append(printable(listing.rel(class_dir)))
            for f in files:
                try:
                    uid = sha256_file(f)
                except OSError as exc:  # unreadable (permissions), or gone since listing
                    listing.dropped.append({"relpath": listing.rel(f), "reason": f"cannot be read ({exc.strerror or exc})"})
                    continue
                records.append(ImageRecord(uid=uid, label=class_dir.name, group=group,
                                           relpath=listing.rel(f), path=str(f)))
    listing.bad_names = bad_dirs + listing.bad_names
    listing.check()
    if not records:
        raise FeatbenchError(f"{root}: no images found (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    return Dataset(name=name, records=records, root=str(root), source="imagefolder", dropped=listing.dropped)


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
