"""torchvision's datasets (:data:`TORCHVISION`): the task names ``tv_caltech101``, ``tv_flowers102``,
``tv_oxford_pets`` and ``tv_sun397`` construct ``torchvision.datasets.<Class>(root, download=...)``
under the first data root, then read the folder it manages with :func:`featbench.datasets.readers.read_any` (no private
torchvision attributes are used). ``download`` is off unless ``FEATBENCH_DOWNLOAD=1``; a dataset
that is not there raises a :class:`FeatbenchError` saying where it was looked for and how to get it.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from featbench.errors import FeatbenchError

from .folder import Dataset
from .readers import read_any


@dataclasses.dataclass(frozen=True)
class TorchvisionSet:
    cls: str  # torchvision.datasets class
    folder: str  # the folder it manages under its root
    marker: str  # a path under the root that exists once it is downloaded
    kwargs: tuple[tuple[str, Any], ...] = ()

    def present(self, root: Path) -> bool:
        return (Path(root) / self.marker).exists()


TORCHVISION: dict[str, TorchvisionSet] = {
    "tv_caltech101": TorchvisionSet("Caltech101", "caltech101", "caltech101/101_ObjectCategories"),
    "tv_flowers102": TorchvisionSet("Flowers102", "flowers-102", "flowers-102/setid.mat", (("split", "test"),)),
    "tv_oxford_pets": TorchvisionSet("OxfordIIITPet", "oxford-iiit-pet", "oxford-iiit-pet/annotations/test.txt",
                                     (("split", "test"),)),
    "tv_sun397": TorchvisionSet("SUN397", "SUN397", "SUN397/ClassName.txt"),
}


def download_enabled() -> bool:
    return os.environ.get("FEATBENCH_DOWNLOAD", "").lower() in ("1", "true", "yes")


def load_torchvision(name: str, root: str | os.PathLike, download: bool | None = None) -> Dataset:
    """``torchvision.datasets.<Class>(root, download=download)``, then the folder read by :func:`read_any`."""
    if name not in TORCHVISION:
        raise FeatbenchError(f"unknown torchvision dataset '{name}'; known: {', '.join(TORCHVISION)}")
    spec = TORCHVISION[name]
    download = download_enabled() if download is None else download
    root = Path(root).expanduser()
    folder = root / spec.folder
    existed = folder.exists()
    how = (f"with internet access, set FEATBENCH_DOWNLOAD=1 (or run: python -c \"import torchvision; "
           f"torchvision.datasets.{spec.cls}('{root}', download=True)\")")
    try:
        import torchvision.datasets as tvd

        getattr(tvd, spec.cls)(str(root), download=download, **dict(spec.kwargs))
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted. You can use download=True ..."
        _remove_if_empty(folder, existed)
        raise FeatbenchError(f"{name}: torchvision.datasets.{spec.cls} found no usable copy under {folder} "
                             f"({exc}); " + (how if not download else "the download did not complete")) from exc
    except Exception as exc:  # network errors, missing gdown, bad archives
        _remove_if_empty(folder, existed)
        raise FeatbenchError(f"{name}: torchvision.datasets.{spec.cls} could not "
                             f"{'download' if download else 'open'} {folder}: {type(exc).__name__}: {exc}") from exc
    return read_any(folder, name=name)


def _remove_if_empty(folder: Path, existed: bool) -> None:
    """torchvision's Caltech101 creates its folder before checking; undo that on failure."""
    try:
        if not existed and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    except OSError:
        pass
