"""Speed history: an append-only JSON-lines store of ``featbench speed`` runs, and comparisons.

Every ``featbench speed`` run appends one line (one JSON object) to the history file
(``--history PATH``, else ``$FEATBENCH_SPEED_HISTORY``, else
``$XDG_DATA_HOME/featbench/speed-history.jsonl``, i.e. ``~/.local/share/featbench/speed-history.jsonl``).
It is kept out of the feature cache folder on purpose: ``featbench cache clear`` deletes that
whole folder, and a history must survive it::

    {"schema": 1, "time": ..., "git_commit": "<sha>[-dirty]", "machine_fingerprint": "<16 hex>",
     "machine": {...}, "threads": {...}, "settings": {...}, "rows": [{extractor, device, batch_size,
     mode, dataset, img_per_s, latency_ms_p50, ...}, ...]}

Lines are never rewritten; a line that does not parse (a run killed mid-write) is skipped.

Machines are told apart by a *fingerprint*: a hash of the CPU model, the logical CPU count,
the architecture, the OS kernel name and the GPU names. The hostname is left out on purpose,
so that CI runners or containers of the same kind share a fingerprint. Speeds are compared
only between rows with the same fingerprint; numbers from different machines are not
comparable and :func:`compare` says so instead of comparing them.

A comparison matches rows on :data:`KEY` (extractor spec, device, batch size, mode, dataset)
and reports ``ratio = current img/s / baseline img/s``; a row is a regression when
``ratio < 1 - threshold`` (default: more than 20 % fewer images per second).
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import statistics
from pathlib import Path
from typing import Any, Iterable, Sequence

from featbench.errors import FeatbenchError
from featbench.records import json_default

HISTORY_SCHEMA = 1
KEY = ("extractor", "device", "batch_size", "mode", "dataset")
#: Row fields kept in the history (the rest of a speed.csv row stays in speed.json only).
HISTORY_FIELDS = KEY + ("n_images", "repeats", "img_per_s", "latency_ms_p50", "latency_ms_iqr",
                        "read_ms", "decode_ms", "preprocess_ms", "extract_ms", "encode_ms", "transfer_ms",
                        "e2e_over_synthetic", "fit_s", "error")


def default_history_path() -> Path:
    env = os.environ.get("FEATBENCH_SPEED_HISTORY")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "featbench" / "speed-history.jsonl"


# ----------------------------------------------------------------------------- machine identity

def machine_identity(machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The hostname-independent facts the fingerprint is made of."""
    if machine is None:
        from featbench.provenance import machine as _machine

        machine = _machine()
    return {"cpu": str(machine.get("cpu", "")), "cpu_count": machine.get("cpu_count"),
            "arch": machine.get("arch") or platform.machine(), "system": machine.get("system") or platform.system(),
            "gpus": list(machine.get("gpus") or [])}


def fingerprint(machine: dict[str, Any] | None = None) -> str:
    """16 hex digits naming the kind of machine (CPU model, CPU count, arch, OS, GPUs); no hostname."""
    blob = json.dumps(machine_identity(machine), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ----------------------------------------------------------------------------- the store

def make_record(rows: Sequence[dict[str, Any]], meta: dict[str, Any]) -> dict[str, Any]:
    """One history line from a speed run's rows and its metadata (speed.json's ``meta``)."""
    keep = [{k: _clean(r.get(k)) for k in HISTORY_FIELDS if k in r} for r in rows]
    return {"schema": HISTORY_SCHEMA,
            "time": meta.get("started") or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "git_commit": meta.get("git_commit"), "machine_fingerprint": meta.get("machine_fingerprint"),
            "machine": meta.get("machine"), "threads": meta.get("threads"), "settings": meta.get("settings"),
            "rows": keep}


def append(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Append one record as one line (a single ``write`` on an O_APPEND file)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=json_default) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":  # a torn last line: keep it on its own
            line = b"\n" + line
        os.write(fd, line)
    finally:
        os.close(fd)
    return path


def load(path: str | os.PathLike | None) -> list[dict[str, Any]]:
    """Every parseable record of a history file, oldest first; [] when the file does not exist."""
    if path is None:
        return []
    path = Path(path).expanduser()
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a run killed mid-write; the other lines stay usable
        if isinstance(rec, dict) and isinstance(rec.get("rows"), list):
            out.append(rec)
    return out


# ----------------------------------------------------------------------------- baselines

@dataclasses.dataclass
class Baseline:
    """Baseline rows for a comparison, or why there are none (``rows == []`` and ``message``)."""

    label: str
    rows: list[dict[str, Any]]
    message: str = ""
    #: True when the user named a baseline (commit or file) that is absent or has no rows from
    #: this machine: ``featbench speed`` then exits 2 (``last`` without one is not an error).
    missing: bool = False


def resolve_baseline(base: str, history: Sequence[dict[str, Any]], current_fingerprint: str) -> Baseline:
    """Rows to compare against, from this machine only.

    ``base`` is ``last`` (the newest history record from this machine), a git commit prefix
    (per key, the median img/s over every record of that commit from this machine), or the
    path of a ``speed.json``.
    """
    if base.endswith(".json") or Path(base).expanduser().is_file():
        p = Path(base).expanduser()
        if not p.is_file():
            return Baseline(base, [], f"baseline file not found: {p}", missing=True)
        data = json.loads(p.read_text())
        meta = data.get("meta", {})
        fp = meta.get("machine_fingerprint") or fingerprint(meta.get("machine") or {})
        if fp != current_fingerprint:
            return Baseline(str(p), [], f"{p} was measured on another machine (fingerprint {fp}, "
                            f"cpu {(meta.get('machine') or {}).get('cpu', '?')}); this machine is "
                            f"{current_fingerprint}: no rows compared", missing=True)
        return Baseline(f"{p} ({meta.get('git_commit') or 'no commit'})", list(data.get("rows", [])))
    same = [r for r in history if r.get("machine_fingerprint") == current_fingerprint]
    if base == "last":
        if not same:
            others = len(history)
            return Baseline("last", [], "no earlier speed run from this machine in the history"
                            + (f" ({others} record(s) from other machines)" if others else "")
                            + ": nothing compared")
        rec = same[-1]
        return Baseline(f"last run ({_short(rec.get('git_commit'))}, {rec.get('time')})", rec["rows"])
    prefix = base.lower()
    of_commit = [r for r in history if str(r.get("git_commit") or "").lower().startswith(prefix)]
    if not of_commit:
        return Baseline(base, [], f"commit '{base}' is not in the speed history", missing=True)
    commits = sorted({str(r.get("git_commit")) for r in of_commit})
    if len({c.replace("-dirty", "") for c in commits}) > 1:
        raise FeatbenchError(f"commit prefix '{base}' is ambiguous in the speed history: {', '.join(commits)}")
    mine = [r for r in of_commit if r.get("machine_fingerprint") == current_fingerprint]
    if not mine:
        fps = sorted({f"{r.get('machine_fingerprint')} ({(r.get('machine') or {}).get('cpu', '?')})" for r in of_commit})
        return Baseline(base, [], f"commit {base} was measured only on other machines ({'; '.join(fps)}); "
                        f"this machine is {current_fingerprint}: no rows compared", missing=True)
    return Baseline(f"commit {_short(commits[0])} ({len(mine)} run(s), median)", median_rows(mine))


def median_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per key with the median img/s over several records."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for rec in records:
        for row in rec["rows"]:
            groups.setdefault(row_key(row), []).append(row)
    out = []
    for rows in groups.values():
        vals = [float(r["img_per_s"]) for r in rows if _finite(r.get("img_per_s"))]
        row = dict(rows[-1])
        row["img_per_s"] = statistics.median(vals) if vals else float("nan")
        row["n_runs"] = len(vals)
        out.append(row)
    return out


# ----------------------------------------------------------------------------- comparison

def row_key(row: dict[str, Any]) -> tuple:
    return tuple(str(row.get(k, "")) for k in KEY)


@dataclasses.dataclass
class Comparison:
    baseline: str
    threshold: float
    rows: list[dict[str, Any]]  # key fields, current, baseline, ratio, regression
    unmatched_current: int = 0
    unmatched_baseline: int = 0
    message: str = ""

    @property
    def regressions(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["regression"]]

    def format(self) -> str:
        lines = [f"speed compared with {self.baseline} (ratio = current / baseline img/s; "
                 f"regression below {1 - self.threshold:.2f})"]
        if self.message:
            lines.append(self.message)
        if self.rows:
            head = f"{'extractor':34s} {'device':6s} {'batch':>5s} {'mode':9s} {'base img/s':>11s} {'now img/s':>10s} {'ratio':>6s}"
            lines += [head, "-" * len(head)]
            for r in self.rows:
                flag = "  REGRESSION" if r["regression"] else ""
                lines.append(f"{r['extractor'][:34]:34s} {r['device']:6s} {r['batch_size']:>5} {r['mode']:9s} "
                             f"{r['baseline_img_per_s']:11.2f} {r['img_per_s']:10.2f} {r['ratio']:6.2f}{flag}")
        if self.unmatched_current or self.unmatched_baseline:
            lines.append(f"not compared: {self.unmatched_current} current row(s) without a baseline, "
                         f"{self.unmatched_baseline} baseline row(s) not measured now")
        n = len(self.regressions)
        lines.append(f"{n} regression(s) past {self.threshold:.0%}" if n else
                     ("no regression" if self.rows else "nothing compared"))
        return "\n".join(lines)


def compare(current: Sequence[dict[str, Any]], baseline: Baseline, threshold: float = 0.2) -> Comparison:
    """Ratios current/baseline img/s for every key measured in both (errors and NaNs skipped)."""
    if not 0 < threshold < 1:
        raise FeatbenchError(f"--threshold must be between 0 and 1 (a fraction: 0.2 = 20 % slower); got {threshold}")
    base = {row_key(r): r for r in baseline.rows if _finite(r.get("img_per_s")) and not r.get("error")}
    cur = {row_key(r): r for r in current if _finite(r.get("img_per_s")) and not r.get("error")}
    rows = []
    for key, r in cur.items():
        b = base.get(key)
        if b is None or float(b["img_per_s"]) <= 0:
            continue
        ratio = float(r["img_per_s"]) / float(b["img_per_s"])
        rows.append({**dict(zip(KEY, (r.get(k) for k in KEY))), "img_per_s": float(r["img_per_s"]),
                     "baseline_img_per_s": float(b["img_per_s"]), "ratio": ratio,
                     "regression": ratio < 1.0 - threshold})
    rows.sort(key=lambda r: (r["ratio"], str(r["extractor"])))
    matched = {row_key(r) for r in rows}
    return Comparison(baseline.label, threshold, rows, unmatched_current=len(set(cur) - matched),
                      unmatched_baseline=len(set(base) - matched), message=baseline.message)


# ----------------------------------------------------------------------------- helpers

def _short(commit: Any) -> str:
    if not commit:
        return "no commit"
    c = str(commit)
    return c[:10] + ("-dirty" if c.endswith("-dirty") else "")


def _finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return _clean(v.item())
    return v
