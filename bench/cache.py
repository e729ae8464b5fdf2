"""On-disk feature cache: one ``.npy`` file per (extractor output, image).

Layout: ``ROOT/<namespace>/<uid[:2]>/<uid>.npy`` where ``namespace`` is
:meth:`Extractor.cache_key` (extractor name, parameters, version, output layer and, for learned
extractors, the identity of the training images) and ``uid`` is the image's content sha256.
A changed config, version, weights file or training set therefore lands in a new namespace
and never reads stale features. ``ROOT/<namespace>/meta.json`` says what a namespace holds.

Writes are atomic (a temporary file in the same folder, then ``os.replace``), so a run killed
mid-extraction leaves only whole files behind and the next run resumes where it stopped.
Files are plain ``.npy`` read with ``allow_pickle=False``: no pickle anywhere.

Where it lives: ``--cache-dir``, else ``$FEATBENCH_CACHE``, else ``$XDG_CACHE_HOME/featbench``
(``~/.cache/featbench``). Clear it with ``featbench cache clear`` or by deleting the folder.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np


def default_cache_dir() -> Path:
    if os.environ.get("FEATBENCH_CACHE"):
        return Path(os.environ["FEATBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "featbench"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


class FeatureCache:
    """Per-image feature arrays on disk; ``enabled=False`` turns every call into a no-op miss."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    def _path(self, namespace: str, uid: str) -> Path:
        return self.root / namespace / uid[:2] / f"{uid}.npy"

    def get(self, namespace: str, uid: str) -> np.ndarray | None:
        if not self.enabled:
            return None
        path = self._path(namespace, uid)
        try:
            array = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            self.misses += 1
            return None
        except (ValueError, OSError, EOFError):  # a damaged file counts as a miss and is replaced
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return array

    def put(self, namespace: str, uid: str, array: np.ndarray) -> None:
        if self.enabled:
            atomic_write_bytes(self._path(namespace, uid), _npy_bytes(array))

    def write_meta(self, namespace: str, meta: dict[str, Any]) -> None:
        if not self.enabled:
            return
        path = self.root / namespace / "meta.json"
        if not path.exists():
            atomic_write_bytes(path, json.dumps(meta, indent=2, sort_keys=True, default=str).encode())

    def record_speed(self, namespace: str, n_images: int, seconds: float, device: str) -> None:
        """Remember how fast this namespace's features were computed (reported on later cache hits)."""
        if self.enabled and n_images and seconds > 0:
            blob = {"n_images": n_images, "seconds": seconds, "img_per_s": n_images / seconds, "device": device}
            atomic_write_bytes(self.root / namespace / "speed.json", json.dumps(blob).encode())

    def recorded_speed(self, namespace: str) -> float | None:
        try:
            return float(json.loads((self.root / namespace / "speed.json").read_text())["img_per_s"])
        except (OSError, ValueError, KeyError):
            return None

    def namespaces(self) -> Iterable[tuple[str, dict[str, Any], int, int]]:
        """(namespace, meta, n_files, bytes) for every namespace on disk."""
        if not self.root.is_dir():
            return
        for ns in sorted(p for p in self.root.iterdir() if p.is_dir()):
            meta_path = ns / "meta.json"
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            files = [f for f in ns.glob("*/*.npy")]
            yield ns.name, meta, len(files), sum(f.stat().st_size for f in files)

    def clear(self) -> None:
        if self.root.is_dir():
            shutil.rmtree(self.root)
