"""Atomic output files: a reader sees the old file, the whole new file, or none, never half a file.

Every output of a run (results tables, run.json, reports, figures, feature samples) is written to
a temporary file in the destination folder and moved into place with ``os.replace`` only once it
is complete. A write that fails part-way (a full disk, ``ulimit -f``) removes the temporary file
and raises :class:`OutputWriteError`, which names the file and the reason on one line, so a
failed run never leaves a truncated ``report.html`` that looks finished.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from featbench.errors import FeatbenchError

#: errno values that mean "the environment cannot take this write", not a bug in featbench
WRITE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                errno.ENOTDIR, errno.EISDIR}


class OutputWriteError(FeatbenchError):
    """An output file could not be written (disk full, file-size limit, permissions)."""


def write_failure(path: str | os.PathLike, exc: OSError) -> OutputWriteError:
    """The one-line error for a failed write of ``path``."""
    hint = {errno.EFBIG: " (file-size limit reached: ulimit -f?)", errno.ENOSPC: " (disk full)",
            errno.EDQUOT: " (disk quota exceeded)"}.get(exc.errno or 0, "")
    return OutputWriteError(f"cannot write {path}: {exc.strerror or exc}{hint}")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: read once at import (os.umask can only be read by setting it, which is not thread-safe later)
_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path``.

    For writers that want a file name (``DataFrame.to_parquet``, ``np.save``). On any error the
    temporary file is removed; an ``OSError`` becomes :class:`OutputWriteError`.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs get the usual permissions
    except OSError as exc:
        raise write_failure(path, exc) from None
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        _discard(tmp)
        raise write_failure(path, exc) from None
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()


def npy_bytes(array) -> bytes:
    """``array`` as ``.npy`` bytes (float32 kept, no pickle), for :func:`atomic_write_bytes`."""
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buf.getvalue()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_with(path: str | os.PathLike, writer: Callable[[Path], object]) -> None:
    """``writer(tmp_path)`` writes the file; it lands at ``path`` only if that succeeds."""
    with atomic_path(path) as tmp:
        writer(tmp)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line; if the write fails, cut the file back so no partial line is left."""
    data = line.encode("utf-8") + b"\n"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as exc:
        raise write_failure(path, exc) from None
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, start)
            raise write_failure(path, exc) from None
    finally:
        os.close(fd)
