"""Chunked feature store: many images per ``.npy`` chunk, one SQLite index, no pickle.

Layout under ``ROOT``::

    index.sqlite                       namespaces, chunks and one row per stored feature vector
    chunks/<namespace>/<chunk id>.npy  float arrays [rows, d], written once, never modified

A feature vector is found by ``(namespace, image uid)``: the namespace is the extractor
configuration (:meth:`Extractor.cache_key`), the uid the image's content sha256. The pair is
the index's primary key, so one image is stored at most once per configuration.

Appending is crash-safe. :meth:`FeatureStore.put_many` takes SQLite's write lock
(``BEGIN IMMEDIATE``), drops the uids already present, writes the chunk to a temporary file,
fsyncs and renames it into place, and only then inserts the index rows and commits. A writer
killed at any point leaves either nothing in the index or a complete chunk; at worst an
orphan chunk file no entry points to (``featbench cache info`` counts them, ``clear`` removes
them). Every entry carries a BLAKE2b digest of its row, so damaged bytes behind an intact
``.npy`` header are detected on read and reported as missing (the caller recomputes them and
the entry is rewritten). SQLite's locking makes concurrent writers (several ``featbench run``
processes on one cache) safe; its default rollback journal, not WAL, keeps that true on a
network file system that honours POSIX locks. With the Ray executor only the driver writes:
workers return arrays, so the store needs no cross-node locking.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

INDEX_NAME = "index.sqlite"
CHUNK_DIR = "chunks"
_IN_BATCH = 900  # uids per "IN (...)" query, below SQLite's variable limit

SCHEMA = """
CREATE TABLE IF NOT EXISTS namespaces (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE NOT NULL,
    meta TEXT,              -- JSON: what the namespace holds (extractor, output)
    speed TEXT,             -- JSON: how fast its features were computed
    dtype TEXT,             -- every row of the namespace has this dtype ...
    dim INTEGER             -- ... and this length
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    ns INTEGER NOT NULL,
    file TEXT NOT NULL,     -- relative to ROOT
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    ns INTEGER NOT NULL,
    uid BLOB NOT NULL,      -- 32-byte sha256 of the image
    chunk INTEGER NOT NULL,
    row INTEGER NOT NULL,
    digest BLOB NOT NULL,   -- BLAKE2b-64 of the row's bytes
    PRIMARY KEY (ns, uid)
) WITHOUT ROWID;
"""


class StoreWriteError(OSError):
    """The store could not be written (full disk, file-size limit, read-only folder)."""


def row_digest(row: np.ndarray) -> bytes:
    """BLAKE2b-64 of a row's bytes (read in place: no copy of a contiguous row)."""
    return hashlib.blake2b(memoryview(np.ascontiguousarray(row)).cast("B"), digest_size=8).digest()


def _uid_bytes(uid: str) -> bytes:
    try:
        return bytes.fromhex(uid) if len(uid) == 64 else uid.encode()
    except ValueError:
        return uid.encode()


def _uid_text(blob: bytes) -> str:
    return blob.hex() if len(blob) == 32 else blob.decode()


def write_npy_atomic(path: Path, array: np.ndarray) -> int:
    """``np.save`` to a temporary file beside ``path``, fsync, rename; returns the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array, allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
            size = fh.tell()
        os.replace(tmp, path)
        return size
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class FeatureStore:
    """Index + chunks under ``root``; safe for several processes at once (SQLite locking)."""

    def __init__(self, root: str | os.PathLike, timeout: float = 120.0) -> None:
        self.root = Path(root)
        self.timeout = timeout
        self._con: sqlite3.Connection | None = None
        self._ns_ids: dict[str, int] = {}

    # -- connection ------------------------------------------------------------------------
    @property
    def exists(self) -> bool:
        return (self.root / INDEX_NAME).is_file()

    def connect(self) -> sqlite3.Connection:
        if self._con is None:
            self.root.mkdir(parents=True, exist_ok=True)
            con = sqlite3.connect(self.root / INDEX_NAME, timeout=self.timeout, isolation_level=None)
            con.executescript(SCHEMA)
            self._con = con
        return self._con

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
            self._ns_ids.clear()

    def __getstate__(self) -> dict[str, Any]:  # a connection never travels to another process
        return {"root": self.root, "timeout": self.timeout, "_con": None, "_ns_ids": {}}

    def _ns_id(self, namespace: str, create: bool) -> int | None:
        if namespace in self._ns_ids:
            return self._ns_ids[namespace]
        con = self.connect()
        row = con.execute("SELECT id FROM namespaces WHERE name = ?", (namespace,)).fetchone()
        if row is None and create:
            con.execute("INSERT OR IGNORE INTO namespaces (name) VALUES (?)", (namespace,))
            row = con.execute("SELECT id FROM namespaces WHERE name = ?", (namespace,)).fetchone()
        if row is None:
            return None
        self._ns_ids[namespace] = row[0]
        return row[0]

    # -- reading ---------------------------------------------------------------------------
    def _entries(self, namespace: str, uids: Iterable[str]) -> tuple[int, str, int, list[tuple[bytes, int, int, bytes]]] | None:
        """``(namespace id, dtype, dim, [(uid, chunk, row, digest), ...])`` for the stored ``uids``,
        from the index alone; None when the namespace holds nothing."""
        uids = list(dict.fromkeys(uids))
        if not uids or not self.exists:
            return None
        ns = self._ns_id(namespace, create=False)
        if ns is None:
            return None
        con = self.connect()
        dtype, dim = con.execute("SELECT dtype, dim FROM namespaces WHERE id = ?", (ns,)).fetchone()
        entries = []
        for start in range(0, len(uids), _IN_BATCH):
            keys = [_uid_bytes(u) for u in uids[start:start + _IN_BATCH]]
            marks = ",".join("?" * len(keys))
            entries += con.execute(
                f"SELECT uid, chunk, row, digest FROM entries WHERE ns = ? AND uid IN ({marks})", (ns, *keys)).fetchall()
        return ns, dtype, dim, entries

    def digests(self, namespace: str, uids: Iterable[str]) -> tuple[str, dict[str, bytes]]:
        """``(layout, uid -> row digest)`` for the stored ``uids``, read from the index without
        touching a chunk; ``layout`` (``"<dtype>[<dim>]"``) says how to read the bytes a digest
        stands for. A cached evaluation is found by these digests, so a re-run whose evaluations
        are all cached never reads its feature rows."""
        found = self._entries(namespace, uids)
        if found is None or not found[3]:
            return "", {}
        _, dtype, dim, entries = found
        return f"{np.dtype(dtype).str}[{dim}]", {_uid_text(uid): bytes(digest) for uid, _, _, digest in entries}

    def get_many(self, namespace: str, uids: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored, intact rows among ``uids`` (uid -> 1-D array); damaged ones are dropped
        from the index so the caller's recomputation rewrites them."""
        found_entries = self._entries(namespace, uids)
        if found_entries is None:
            return {}
        ns, dtype, dim, entries = found_entries
        by_chunk: dict[int, list[tuple[bytes, int, bytes]]] = defaultdict(list)
        for uid, chunk, row, digest in entries:
            by_chunk[chunk].append((uid, row, digest))
        found: dict[str, np.ndarray] = {}
        damaged: list[bytes] = []
        files = dict(self.connect().execute(f"SELECT id, file FROM chunks WHERE id IN ({','.join('?' * len(by_chunk))})",
                                            tuple(by_chunk))) if by_chunk else {}
        for chunk, wanted in by_chunk.items():
            data = self._load_chunk(files.get(chunk), dtype, dim)
            if data is None:
                damaged += [uid for uid, _, _ in wanted]
                continue
            held = [w for w in wanted if w[1] < len(data)]
            damaged += [uid for uid, row, _ in wanted if row >= len(data)]
            rows = np.array(data[[row for _, row, _ in held]])  # one read of the wanted rows
            for (uid, _, digest), array in zip(held, rows):
                if row_digest(array) != digest:
                    damaged.append(uid)
                else:
                    found[_uid_text(uid)] = array
        if damaged:
            self._forget(ns, damaged)
        return found

    def _load_chunk(self, relpath: str | None, dtype: str | None, dim: int | None) -> np.ndarray | None:
        if relpath is None:
            return None
        try:
            data = np.load(self.root / relpath, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None
        if data.ndim != 2 or str(data.dtype) != dtype or data.shape[1] != dim:
            return None
        return data

    def _forget(self, ns: int, uids: list[bytes]) -> None:
        try:
            con = self.connect()
            con.execute("BEGIN IMMEDIATE")
            con.executemany("DELETE FROM entries WHERE ns = ? AND uid = ?", [(ns, u) for u in uids])
            con.execute("COMMIT")
        except sqlite3.Error:  # a read-only store still reads; the damaged rows stay misses
            if self._con is not None and self._con.in_transaction:
                self._con.execute("ROLLBACK")

    def dim(self, namespace: str) -> int | None:
        """The length every row of ``namespace`` has (None before its first row)."""
        ns = self._ns_id(namespace, create=False) if self.exists else None
        if ns is None:
            return None
        return self.connect().execute("SELECT dim FROM namespaces WHERE id = ?", (ns,)).fetchone()[0]

    def count(self, namespace: str) -> int:
        ns = self._ns_id(namespace, create=False) if self.exists else None
        if ns is None:
            return 0
        return self.connect().execute("SELECT COUNT(*) FROM entries WHERE ns = ?", (ns,)).fetchone()[0]

    # -- writing ---------------------------------------------------------------------------
    def put_many(self, namespace: str, arrays: Mapping[str, np.ndarray]) -> int:
        """Append the rows not stored yet as one chunk; returns how many were written.

        Rows must be 1-D and of one dtype and length. A namespace whose stored rows have
        another dtype or length (written by an older, wrong extractor) is emptied first: the
        new rows are what the extractor computes now."""
        if not arrays:
            return 0
        items = [(uid, np.ascontiguousarray(a)) for uid, a in arrays.items()]
        first = items[0][1]
        if first.ndim != 1 or first.dtype.hasobject or any(a.shape != first.shape or a.dtype != first.dtype
                                                           for _, a in items):
            raise ValueError("put_many: rows must be 1-D arrays of one plain dtype and length")
        try:
            con = self.connect()
            ns = self._ns_id(namespace, create=True)
            con.execute("BEGIN IMMEDIATE")
            try:
                written = self._append(con, ns, namespace, items, str(first.dtype), int(first.shape[0]))
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        except (OSError, sqlite3.Error) as exc:
            raise StoreWriteError(f"feature store {self.root}: cannot write ({exc})") from exc
        return written

    def _append(self, con, ns, namespace, items, dtype, dim) -> int:
        stored = con.execute("SELECT dtype, dim FROM namespaces WHERE id = ?", (ns,)).fetchone()
        if stored != (dtype, dim):
            if stored != (None, None):  # rows of another shape or dtype: misses from now on
                con.execute("DELETE FROM entries WHERE ns = ?", (ns,))
            con.execute("UPDATE namespaces SET dtype = ?, dim = ? WHERE id = ?", (dtype, dim, ns))
        keys = [_uid_bytes(u) for u, _ in items]
        present: set[bytes] = set()
        for start in range(0, len(keys), _IN_BATCH):
            part = keys[start:start + _IN_BATCH]
            present.update(r[0] for r in con.execute(
                f"SELECT uid FROM entries WHERE ns = ? AND uid IN ({','.join('?' * len(part))})", (ns, *part)))
        new = [(k, a) for k, (_, a) in zip(keys, items) if k not in present]
        new = list({k: a for k, a in new}.items())  # a uid given twice is stored once
        if not new:
            return 0
        data = np.stack([a for _, a in new])
        relpath = f"{CHUNK_DIR}/{namespace}/{uuid.uuid4().hex}.npy"
        size = write_npy_atomic(self.root / relpath, data)
        chunk = con.execute("INSERT INTO chunks (ns, file, rows, bytes) VALUES (?, ?, ?, ?)",
                            (ns, relpath, len(new), size)).lastrowid
        con.executemany("INSERT INTO entries (ns, uid, chunk, row, digest) VALUES (?, ?, ?, ?, ?)",
                        [(ns, k, chunk, i, row_digest(data[i])) for i, (k, _) in enumerate(new)])
        return len(new)

    # -- namespace metadata ----------------------------------------------------------------
    def _set_json(self, namespace: str, column: str, value: dict[str, Any], only_if_empty: bool) -> None:
        try:
            con = self.connect()
            ns = self._ns_id(namespace, create=True)
            blob = json.dumps(value, sort_keys=True, default=str)
            where = f" AND ({column} IS NULL OR json_valid({column}) = 0)" if only_if_empty else ""
            con.execute(f"UPDATE namespaces SET {column} = ? WHERE id = ?{where}", (blob, ns))
        except (OSError, sqlite3.Error) as exc:
            raise StoreWriteError(f"feature store {self.root}: cannot write ({exc})") from exc

    def set_meta(self, namespace: str, meta: dict[str, Any]) -> None:
        """What a namespace holds; kept once written, replaced when it is not valid JSON."""
        self._set_json(namespace, "meta", meta, only_if_empty=True)

    def set_speed(self, namespace: str, speed: dict[str, Any]) -> None:
        self._set_json(namespace, "speed", speed, only_if_empty=False)

    def _get_json(self, namespace: str, column: str) -> dict[str, Any] | None:
        ns = self._ns_id(namespace, create=False) if self.exists else None
        if ns is None:
            return None
        blob = self.connect().execute(f"SELECT {column} FROM namespaces WHERE id = ?", (ns,)).fetchone()[0]
        try:
            value = json.loads(blob) if blob else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def meta(self, namespace: str) -> dict[str, Any] | None:
        return self._get_json(namespace, "meta")

    def speed(self, namespace: str) -> dict[str, Any] | None:
        return self._get_json(namespace, "speed")

    def stats(self) -> dict[str, dict[str, Any]]:
        """namespace -> {meta, entries, chunks, bytes, orphans} for every namespace in the index."""
        if not self.exists:
            return {}
        con = self.connect()
        out: dict[str, dict[str, Any]] = {}
        query = """SELECT n.name, n.meta, (SELECT COUNT(*) FROM entries e WHERE e.ns = n.id),
                          COUNT(c.id), COALESCE(SUM(c.bytes), 0)
                   FROM namespaces n LEFT JOIN chunks c ON c.ns = n.id GROUP BY n.id"""
        for name, meta, entries, chunks, size in con.execute(query):
            try:
                meta = json.loads(meta) if meta else {}
            except ValueError:
                meta = {"damaged": "meta is not valid JSON"}
            folder = self.root / CHUNK_DIR / name
            on_disk = len(list(folder.glob("*.npy"))) if folder.is_dir() else 0
            out[name] = {"meta": meta if isinstance(meta, dict) else {}, "entries": entries, "chunks": chunks,
                         "bytes": int(size), "orphans": max(0, on_disk - chunks)}
        return out
