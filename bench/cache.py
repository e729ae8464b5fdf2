"""The feature cache the runner uses: a :class:`~featbench.store.FeatureStore` plus the old layout.

Features live in the chunked store (``ROOT/index.sqlite`` + ``ROOT/chunks/``, see
:mod:`featbench.store`), keyed by ``namespace`` = :meth:`Extractor.cache_key` (extractor name,
parameters, version, output layer and, for learned extractors, the identity of the training
images) and ``uid`` = the image's content sha256. A changed config, version, weights file or
training set therefore lands in a new namespace and never reads stale features.

Earlier featbench versions wrote one ``.npy`` per image: ``ROOT/<namespace>/<uid[:2]>/<uid>.npy``
with ``meta.json`` and ``speed.json`` beside them. Those files are still read: a hit is checked
(1-D, float, finite, the namespace's length), moved into the store and deleted, so no cached work
is lost; ``featbench cache migrate`` moves everything at once.

Entries that do not fit (another length or dtype than the namespace's, a digest that does not
match the bytes, a damaged chunk) are misses and are rewritten by the run that recomputes them.
A cache that cannot be written (full disk, file-size limit, a path that is not a folder) prints
one warning and the run carries on without writing to it.

Where it lives: ``--cache-dir``, else ``$FEATBENCH_CACHE``, else ``$XDG_CACHE_HOME/featbench``
(``~/.cache/featbench``). Clear it with ``featbench cache clear`` or by deleting the folder.
"""
from __future__ import annotations

import json
import os
import shutil
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from featbench.store import CHUNK_DIR, FeatureStore, StoreWriteError

LEGACY_BATCH = 4096  # legacy files migrated per store chunk by `featbench cache migrate`
#: Run-time scratch space under the cache root (per-task descriptor stores, see
#: :mod:`featbench.features.descriptor_store`); never a namespace, removed by ``clear``.
SCRATCH_DIR = "scratch"
#: finished classifier evaluations (:mod:`featbench.evaluation_cache`); never a namespace
EVALUATIONS_DIR = "evaluations"


def default_cache_dir() -> Path:
    if os.environ.get("FEATBENCH_CACHE"):
        return Path(os.environ["FEATBENCH_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "featbench"


def _read_json(path: Path) -> dict[str, Any] | None:
    """A small JSON file, or None when it is missing, truncated or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class FeatureCache:
    """Feature vectors by (namespace, image uid); ``enabled=False`` makes every call a no-op miss."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True) -> None:
        self.root = Path(root).expanduser() if root else default_cache_dir()
        self.enabled = enabled
        self.writable = enabled
        self.store = FeatureStore(self.root)
        self.hits = 0
        self.misses = 0
        self.warning: str | None = None

    def _degrade(self, exc: BaseException) -> None:
        """Stop writing (and, if reading fails too, reading) after the first failure; warn once."""
        if self.warning is None:
            self.warning = f"{exc}; continuing without writing to the feature cache"
            print(f"featbench: warning: {self.warning}", file=sys.stderr, flush=True)
        self.writable = False

    # -- reading -------------------------------------------------------------------------
    def get(self, namespace: str, uid: str) -> np.ndarray | None:
        return self.get_many(namespace, [uid]).get(uid)

    def get_many(self, namespace: str, uids: Iterable[str], count: bool = True) -> dict[str, np.ndarray]:
        """uid -> feature vector for the uids held intact; every other uid counts as a miss
        (``count=False``: rows already counted as hits by :meth:`digests` are not counted again)."""
        uids = list(dict.fromkeys(uids))
        if not self.enabled:
            return {}
        try:
            found = self.store.get_many(namespace, uids)
        except sqlite3.Error as exc:  # an unreadable index: run as if the cache were empty
            self._unreadable(exc)
            found = {}
        rest = [u for u in uids if u not in found]
        if rest and (self.root / namespace).is_dir():
            found.update(self._legacy_get_many(namespace, rest))
        if count:
            self.hits += len(found)
            self.misses += len(uids) - len(found)
        return found

    def digests(self, namespace: str, uids: Iterable[str]) -> tuple[str, dict[str, bytes]]:
        """``(layout, uid -> row digest)`` of the rows the store's index holds, without reading them
        (:meth:`FeatureStore.digests`); they count as hits, the rest as misses, so a caller that then
        reads rows passes ``count=False`` to :meth:`get_many`. Rows of the old per-image layout are
        not listed: :meth:`get_many` reads them and moves them into the store."""
        uids = list(dict.fromkeys(uids))
        if not self.enabled:
            return "", {}
        try:
            layout, found = self.store.digests(namespace, uids)
        except sqlite3.Error as exc:
            self._unreadable(exc)
            layout, found = "", {}
        self.hits += len(found)
        self.misses += len(uids) - len(found)
        return layout, found

    def _unreadable(self, exc: sqlite3.Error) -> None:
        """An unreadable index: run as if the cache were empty."""
        self._degrade(StoreWriteError(f"feature store {self.root}: cannot read ({exc})"))
        self.enabled = False

    def _legacy_path(self, namespace: str, uid: str) -> Path:
        return self.root / namespace / uid[:2] / f"{uid}.npy"

    def _legacy_get_many(self, namespace: str, uids: list[str]) -> dict[str, np.ndarray]:
        """Per-image files of the old layout: checked, moved into the store, then deleted."""
        arrays, bad = {}, []
        for uid in uids:
            path = self._legacy_path(namespace, uid)
            try:
                array = np.load(path, allow_pickle=False)
            except FileNotFoundError:
                continue
            except (ValueError, OSError, EOFError):
                bad.append(path)
                continue
            if array.ndim == 1 and array.dtype.kind == "f" and array.size and np.isfinite(array).all():
                arrays[uid] = array
            else:
                bad.append(path)
        if arrays:  # one length per namespace: the stored one, else the most common here
            dim = self.store.dim(namespace) if self.store.exists else None
            dim = dim or Counter(a.shape[0] for a in arrays.values()).most_common(1)[0][0]
            bad += [self._legacy_path(namespace, u) for u, a in arrays.items() if a.shape[0] != dim]
            arrays = {u: a.astype(np.float32, copy=False) for u, a in arrays.items() if a.shape[0] == dim}
        if arrays and self.writable:
            self._migrate_meta(namespace)
            if self._put(namespace, arrays):
                bad += [self._legacy_path(namespace, u) for u in arrays]  # now in the store
        for path in bad:
            if self.writable:
                path.unlink(missing_ok=True)
        return arrays

    def _migrate_meta(self, namespace: str) -> None:
        meta = _read_json(self.root / namespace / "meta.json")
        if meta is not None and self.store.meta(namespace) is None:
            self.write_meta(namespace, meta)
        speed = _read_json(self.root / namespace / "speed.json")
        if speed is not None and self.store.speed(namespace) is None:
            self._write(self.store.set_speed, namespace, speed)

    # -- writing -------------------------------------------------------------------------
    def _write(self, fn, *args) -> bool:
        if not self.writable:
            return False
        try:
            fn(*args)
            return True
        except StoreWriteError as exc:
            self._degrade(exc)
            return False

    def _put(self, namespace: str, arrays: Mapping[str, np.ndarray]) -> bool:
        return self._write(self.store.put_many, namespace, arrays)

    def put(self, namespace: str, uid: str, array: np.ndarray) -> None:
        self.put_many(namespace, {uid: array})

    def put_many(self, namespace: str, arrays: Mapping[str, np.ndarray]) -> None:
        """Store rows as one chunk (those already stored are skipped)."""
        if self.enabled and arrays:
            self._put(namespace, arrays)

    def write_meta(self, namespace: str, meta: dict[str, Any]) -> None:
        if self.enabled:
            self._write(self.store.set_meta, namespace, meta)

    def record_speed(self, namespace: str, n_images: int, seconds: float, device: str) -> None:
        """Remember how fast this namespace's features were computed (reported on later cache hits)."""
        if self.enabled and n_images and seconds > 0:
            blob = {"n_images": n_images, "seconds": seconds, "img_per_s": n_images / seconds, "device": device}
            self._write(self.store.set_speed, namespace, blob)

    def recorded_speed(self, namespace: str) -> float | None:
        try:
            speed = self.store.speed(namespace) or _read_json(self.root / namespace / "speed.json") or {}
            return float(speed["img_per_s"])
        except (sqlite3.Error, KeyError, TypeError, ValueError):
            return None

    # -- housekeeping ----------------------------------------------------------------------
    def _legacy_namespaces(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return sorted(p for p in self.root.iterdir() if p.is_dir() and p.name not in (CHUNK_DIR, SCRATCH_DIR, EVALUATIONS_DIR))

    def stats(self) -> list[dict[str, Any]]:
        """One dict per namespace: name, meta, entries, chunks, legacy_files, bytes, orphans."""
        rows = {name: {"name": name, **s, "legacy_files": 0} for name, s in self.store.stats().items()}
        for folder in self._legacy_namespaces():
            files = list(folder.glob("*/*.npy"))
            row = rows.setdefault(folder.name, {"name": folder.name, "meta": {}, "entries": 0, "chunks": 0,
                                                "bytes": 0, "orphans": 0, "legacy_files": 0})
            row["legacy_files"] = len(files)
            row["bytes"] += sum(f.stat().st_size for f in files)
            if not row["meta"]:
                meta = _read_json(folder / "meta.json")
                row["meta"] = meta if meta is not None else (
                    {"damaged": "meta.json is not valid JSON"} if (folder / "meta.json").exists() else {})
        return [rows[k] for k in sorted(rows)]

    def namespaces(self) -> Iterable[tuple[str, dict[str, Any], int, int]]:
        """(namespace, meta, n_files, bytes) for every namespace on disk."""
        for row in self.stats():
            yield row["name"], row["meta"], row["chunks"] + row["legacy_files"], row["bytes"]

    def migrate(self) -> int:
        """Move every per-image file of the old layout into the store; returns how many moved."""
        moved = 0
        for folder in self._legacy_namespaces():
            uids = sorted(f.stem for f in folder.glob("*/*.npy"))
            for start in range(0, len(uids), LEGACY_BATCH):
                moved += len(self._legacy_get_many(folder.name, uids[start:start + LEGACY_BATCH]))
            if not self.writable:
                break
            self._migrate_meta(folder.name)
            if not any(folder.glob("*/*.npy")):
                shutil.rmtree(folder, ignore_errors=True)
        return moved

    def clear(self) -> None:
        self.store.close()
        if self.root.is_dir():
            shutil.rmtree(self.root)
