"""The run folder (``--out``): checked before any work, locked while a run writes, cleared of an
earlier run's outputs, and a ``run.json`` status that tells the truth.

Status values written to ``run.json`` (always atomically, see :mod:`featbench.atomic`):

* ``running``: extraction and scoring are under way (a ``kill -9`` leaves this; the lock shows
  whether a process still holds the folder);
* ``reporting``: every result is written (``results.*``), the report is being built;
* ``complete``: results and report are written; only then;
* ``failed``: the run stopped; ``status_reason`` says why (a bad image under ``--strict``, a
  failed write, Ctrl-C, SIGTERM, a bug).

The lock is ``OUT/.featbench.lock`` taken with `filelock <https://py-filelock.readthedocs.io>`_
(an OS-level ``flock`` on POSIX, ``msvcrt`` locking on Windows): the kernel drops it when the
process dies, even by ``kill -9``, so a crashed run never leaves a stale lock behind, unlike a
pid file. A second run on the same folder is refused at once with one line rather than waiting
or mixing its rows into the first run's files.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from featbench.errors import FeatbenchError

LOCK_NAME = ".featbench.lock"
#: what a run writes into --out, cleared before a new run (plus the earlier run.json's "outputs")
RUN_OUTPUTS = ("results.csv", "results.parquet", "results.jsonl", "predictions.jsonl", "report.html", "report.md",
               "accuracy.csv", "accuracy.tex", "results-merged.csv", "domain_matrices.csv", "figures",
               "features-sample", "gallery")


class TerminatedBySignal(BaseException):
    """SIGTERM during a run: unwinds like Ctrl-C so run.json can say ``failed``."""


def check_out_dir(out: Path, option: str = "--out") -> None:
    """Without creating anything: ``out`` is a writable folder, or could be created as one."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FeatbenchError(f"{option} {out}: exists and is not a folder")
    parent = out
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise FeatbenchError(f"{option} {out}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise FeatbenchError(f"{option} {out}: {parent} is not writable (permission denied)")


def prepare_out_dir(out: Path, option: str = "--out") -> Path:
    """Create ``out`` and prove it is a writable folder, or raise one line naming the option."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FeatbenchError(f"{option} {out}: exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FeatbenchError(f"{option} {out}: cannot create the folder ({exc.strerror or exc})") from None
    try:
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise FeatbenchError(f"{option} {out}: the folder is not writable ({exc.strerror or exc})") from None
    return out


@contextlib.contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold ``OUT/.featbench.lock`` for the block; refuse at once if another run holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(Path(out) / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        other = _run_id(Path(out))
        raise FeatbenchError(f"--out {out}: another featbench run{f' ({other})' if other else ''} is writing "
                             "to this folder; wait for it to finish or choose another --out") from None
    try:
        yield
    finally:
        lock.release()


def _run_id(out: Path) -> str:
    try:
        return str(json.loads((out / "run.json").read_text()).get("run_id", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def clear_earlier_outputs(out: Path) -> set[str]:
    """Remove what an earlier run left in ``out`` (``RUN_OUTPUTS`` and the names its run.json lists
    under ``outputs``); return the names of other entries, which are the user's and stay."""
    names = set(RUN_OUTPUTS)
    try:
        earlier = json.loads((out / "run.json").read_text()).get("outputs", [])
        names |= {n for n in earlier if isinstance(n, str) and n and "/" not in n and n not in (".", "..")}
    except (OSError, ValueError, AttributeError):
        pass
    for name in names - {LOCK_NAME}:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    return {p.name for p in out.iterdir()} - {LOCK_NAME, "run.json"}


def outputs_now(out: Path, foreign: set[str]) -> list[str]:
    """Top-level entries of ``out`` this run wrote (for the next run to clear)."""
    try:
        return sorted({p.name for p in out.iterdir()} - foreign - {LOCK_NAME, "run.json"})
    except OSError:
        return []


@contextlib.contextmanager
def sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`TerminatedBySignal` for the block (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise TerminatedBySignal("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def failure_reason(exc: BaseException) -> str:
    """What run.json says about why a run stopped."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted (Ctrl-C / SIGINT)"
    if isinstance(exc, TerminatedBySignal):
        return "terminated by SIGTERM"
    if isinstance(exc, FeatbenchError):
        return str(exc)
    from featbench.atomic import WRITE_ERRNOS, write_failure

    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return str(write_failure(exc.filename or "an output file", exc))
    return f"internal error: {type(exc).__name__}: {exc}"
