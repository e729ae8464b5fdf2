"""Local descriptors kept on disk while a task runs, so that each image is described once per task.

A learned classical extractor (:mod:`featbench.features.classical`) refits its codebook or GMM on
every trial's training images and then encodes that trial's images; its local descriptors (dense
SIFT, SURF, ...) do not depend on the split. Without this store each trial describes its images
again, and two extractors on the same descriptor stage (``sift-dense-bow-spm`` and
``sift-dense-fv`` share :class:`~featbench.features.local.LocalStage` key) each describe them too.
With it, the first use of an image computes and writes its descriptors, and every later trial,
extractor or learning-curve size reads them back.

Files are exact: ``xy`` (float32) and ``desc`` (float16, what the stage produces) written with
``np.save`` one after the other to ``ROOT/<stage key>/<image key[:2]>/<image key>.npy``; features
encoded from a stored image equal those from a recomputed one. Dense SIFT on a 300 px image is
about 3 MB, so the store of a whole Caltech-101 task is tens of GB: it is scratch space, created
by the runner for the consecutive tasks on one dataset and deleted when a task on another dataset
starts or the run ends (``$FEATBENCH_SCRATCH`` says where; default: the feature cache's folder). Writes stop, and descriptors are simply recomputed, once
the disk's free space falls below ``min_free_bytes``; a file that does not read back is a miss.
"""
from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np

from .local import LocalFeatures

MIN_FREE_BYTES = 4 << 30


class DescriptorStore:
    """Descriptor files by ``(stage key, image key)`` under ``root``; see the module docstring."""

    def __init__(self, root: str | os.PathLike, min_free_bytes: int = MIN_FREE_BYTES) -> None:
        self.root = Path(root)
        self.min_free_bytes = int(min_free_bytes)
        self.hits = self.misses = self.writes = 0
        self.full = False  # set once the disk ran short; nothing more is written
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _path(self, stage_key: str, key: str) -> Path:
        name = key.replace(":", "_").replace(os.sep, "_")
        return self.root / stage_key / name[:2] / f"{name}.npy"

    def get(self, stage_key: str, key: str) -> LocalFeatures | None:
        try:
            with open(self._path(stage_key, key), "rb") as f:
                xy, desc = np.load(f, allow_pickle=False), np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return LocalFeatures(xy, desc)

    def put(self, stage_key: str, key: str, feats: LocalFeatures) -> bool:
        """Write one image's descriptors (atomically); False when the disk is (nearly) full."""
        if self.full:
            return False
        path = self._path(stage_key, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if shutil.disk_usage(path.parent).free < self.min_free_bytes + feats.nbytes:
                self.full = True
                return False
            tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, feats.xy)
                np.save(f, feats.desc)
            os.replace(tmp, path)
        except OSError:
            self.full = True  # read-only or vanished folder: behave as a full disk, never fail the run
            return False
        with self._lock:
            self.writes += 1
        return True

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def counts(self) -> dict[str, int]:
        """Files read back, looked for in vain, and written so far."""
        return {"hits": self.hits, "misses": self.misses, "writes": self.writes}
