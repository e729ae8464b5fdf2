"""Local descriptors kept on disk while a task runs, so that each image is described once per task.

A learned classical extractor (:mod:`featbench.features.classical`) refits its codebook or GMM on
every trial's training images and then encodes that trial's images; its local descriptors (dense
SIFT, SURF, ...) do not depend on the split. Without this store each trial describes its images
again, and two extractors on the same descriptor stage (``sift-dense-bow-spm`` and
``sift-dense-fv`` share :class:`~featbench.features.local.LocalStage` key) each describe them too.
With it, the first use of an image computes and writes its descriptors, and every later trial,
extractor or learning-curve size reads them back.

Files are exact: a 32-byte header (magic, both dtypes, row count, both widths) then the raw bytes
of ``xy`` (float32) and ``desc`` (float16, what the stage produces), at
``ROOT/<stage key>/<image key[:2]>/<image key>.fbd``; features encoded from a stored image equal
those from a recomputed one. Not ``.npy``: describing threads read the store concurrently, and
``np.load`` parses its header with :func:`ast.literal_eval`, which CPython 3.11 does not do
safely from several threads at once ("AST constructor recursion depth mismatch", fixed in 3.12). Dense SIFT on a 300 px image is
about 3 MB, so the store of a whole Caltech-101 task is tens of GB: it is scratch space, created
by the runner for the consecutive tasks on one dataset and deleted when a task on another dataset
starts or the run ends (``$FEATBENCH_SCRATCH`` says where; default: the feature cache's folder). Writes stop, and descriptors are simply recomputed, once
the disk's free space falls below ``min_free_bytes``; a file that does not read back is a miss.
"""
from __future__ import annotations

import os
import shutil
import struct
import threading
from pathlib import Path

import numpy as np

from .local import LocalFeatures

MIN_FREE_BYTES = 4 << 30
_MAGIC = b"FBD1"
_HEADER = struct.Struct("<4s4s4sIII4x")  # magic, xy dtype, desc dtype, rows, xy width, desc width


def _pack(feats: LocalFeatures) -> bytes:
    xy, desc = np.ascontiguousarray(feats.xy), np.ascontiguousarray(feats.desc)
    if xy.ndim != 2 or desc.ndim != 2 or len(xy) != len(desc):
        raise ValueError(f"descriptors must be [N, 2] and [N, D] arrays, got {xy.shape} and {desc.shape}")
    head = _HEADER.pack(_MAGIC, xy.dtype.str.encode(), desc.dtype.str.encode(),
                        len(xy), xy.shape[1], desc.shape[1])
    return head + xy.tobytes() + desc.tobytes()


def _unpack(blob: bytes | bytearray) -> LocalFeatures:
    """The inverse of :func:`_pack`; ValueError for a truncated or foreign file."""
    if len(blob) < _HEADER.size:
        raise ValueError("short descriptor file")
    magic, xy_t, desc_t, n, w_xy, w_desc = _HEADER.unpack_from(blob)
    if magic != _MAGIC:
        raise ValueError("not a descriptor file")
    xy_dt, desc_dt = np.dtype(xy_t.rstrip(b"\0").decode()), np.dtype(desc_t.rstrip(b"\0").decode())
    xy_end = _HEADER.size + n * w_xy * xy_dt.itemsize
    if len(blob) != xy_end + n * w_desc * desc_dt.itemsize:
        raise ValueError("descriptor file has the wrong length")
    xy = np.frombuffer(blob, xy_dt, n * w_xy, _HEADER.size).reshape(n, w_xy)
    desc = np.frombuffer(blob, desc_dt, n * w_desc, xy_end).reshape(n, w_desc)
    return LocalFeatures(xy, desc)


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
        return self.root / stage_key / name[:2] / f"{name}.fbd"

    def get(self, stage_key: str, key: str) -> LocalFeatures | None:
        try:
            with open(self._path(stage_key, key), "rb") as f:
                blob = bytearray(os.fstat(f.fileno()).st_size)  # writable arrays, as np.load gave
                if f.readinto(blob) != len(blob):
                    raise ValueError("descriptor file changed while read")
            feats = _unpack(blob)
        except (OSError, ValueError):
            with self._lock:
                self.misses += 1
            return None
        with self._lock:
            self.hits += 1
        return feats

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
            tmp.write_bytes(_pack(feats))
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
