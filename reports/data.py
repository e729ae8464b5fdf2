"""Reading run folders into one table of result records plus the runs' metadata.

A run folder holds ``results.jsonl`` (one record per scored result, written as it happens, so
it exists even for a run that was stopped), ``results.csv`` / ``results.parquet`` (written at
the end), ``predictions.jsonl``, ``run.json`` and optionally ``features-sample/`` and
``speed.json``. Records are read from ``results.jsonl`` when present, else from the CSV.

Every record is normalised: columns of the current schema that an older record lacks are
added as missing (the schema is additive-only), ``layer``/``weights`` become ``""`` when
empty, and two bookkeeping columns are added: ``_run`` (index into :attr:`RunSet.runs`) and
``device_kind`` (``cpu`` or ``gpu``). ``extractor`` becomes the spec without its ``@layer`` list
(``cnn:m@depth`` -> ``cnn:m``; each record's ``layer`` says which output it is); the spec as
written is kept in ``extractor_spec``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Iterator

import pandas as pd

from featbench.errors import FeatbenchError
from featbench.records import SCHEMA_V1_COLUMNS

from .tables import strip_layers, with_classifier_kind, with_dataset_info

GPU_PREFIXES = ("cuda", "gpu", "mps", "xpu", "rocm")


def current_columns() -> list[str]:
    """Columns every normalised table has: schema v1 (newer columns in the records are kept as they are)."""
    return list(SCHEMA_V1_COLUMNS)


def device_kind(device: Any) -> str:
    text = str(device or "cpu").lower()
    return "gpu" if text.startswith(GPU_PREFIXES) else "cpu"


@dataclasses.dataclass
class Run:
    """One run folder: its path, run.json (``{}`` when absent) and optional extras."""

    path: Path
    meta: dict[str, Any]
    speed: Any = None  # parsed speed.json, when the folder has one

    @property
    def run_id(self) -> str:
        return str(self.meta.get("run_id") or self.path.name)

    @property
    def machine(self) -> dict[str, Any]:
        return self.meta.get("machine") or {}

    def hardware(self, kind: str) -> str:
        """Short description of the hardware behind ``kind`` ('cpu' or 'gpu') in this run."""
        m = self.machine
        if kind == "gpu":
            gpus = m.get("gpus") or []
            return ", ".join(sorted(set(gpus))) if gpus else "GPU"
        cpu = m.get("cpu") or "CPU"
        n = m.get("cpu_count")
        return f"{cpu}, {n} cores" if n else str(cpu)

    def predictions(self) -> Iterator[dict[str, Any]]:
        path = self.path / "predictions.jsonl"
        if not path.is_file():
            return
        with open(path) as fh:
            for line in fh:
                line = line.strip()
                if line:
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError:  # a run killed mid-line: skip the torn last line
                        continue


@dataclasses.dataclass
class RunSet:
    df: pd.DataFrame
    runs: list[Run]


def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a JSON-lines file (NaN allowed, a torn last line ignored)."""
    rows = []
    with open(path) as fh:
        for i, line in enumerate(fh):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise FeatbenchError(f"{path}:{i + 1}: not JSON ({exc.msg})") from exc
    return rows


def normalise(df: pd.DataFrame) -> pd.DataFrame:
    """Add missing schema columns, clean the string keys, coerce the numbers."""
    df = df.copy()
    for col in current_columns():
        if col not in df.columns:
            df[col] = pd.NA
    for col in ("layer", "weights", "method", "classifier", "extractor_config", "protocol", "dataset_id",
                "extractor", "extractor_family", "family", "dataset", "device", "suite", "run_id"):
        df[col] = df[col].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA
                              else str(v)).astype(object)
    df.loc[df["method"] == "", "method"] = "none"
    df.loc[df["device"] == "", "device"] = "cpu"
    df.loc[df["dataset"] == "", "dataset"] = df["task"].map(lambda t: str(t).split(":", 1)[0])
    for col in ("top1", "mean_class_acc", "img_per_s", "extract_s", "fit_s", "C", "cv_score"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    df["trial"] = pd.to_numeric(df["trial"], errors="coerce").fillna(0).astype(int)
    df["device_kind"] = df["device"].map(device_kind)
    # 'cnn:m@depth' and 'cnn:m@pre_logits' give the same pre_logits features (the layer list is not part of the
    # config): the report identifies an extractor by its spec without the @layer list; the spec as written is kept.
    if "extractor_spec" not in df.columns:
        df["extractor_spec"] = df["extractor"]
    df["extractor"] = df["extractor_spec"].map(strip_layers)
    return with_classifier_kind(with_dataset_info(df).drop(columns=["classifier_kind"], errors="ignore"))


def load_run(path: Path) -> tuple[pd.DataFrame, Run]:
    path = Path(path)
    if not path.is_dir():
        raise FeatbenchError(f"{path}: no such run folder")
    meta_path = path / "run.json"
    try:
        meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    except json.JSONDecodeError as exc:
        raise FeatbenchError(f"{meta_path}: not valid JSON ({exc.msg})") from exc
    jsonl, csv, parquet = path / "results.jsonl", path / "results.csv", path / "results.parquet"
    if jsonl.is_file():
        df = pd.DataFrame(read_records(jsonl))
    elif csv.is_file():
        df = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    elif parquet.is_file():
        df = pd.read_parquet(parquet)
    else:
        raise FeatbenchError(f"{path}: no results.jsonl or results.csv (is it a featbench run folder?)")
    speed = None
    if (path / "speed.json").is_file():
        try:
            speed = json.loads((path / "speed.json").read_text())
        except json.JSONDecodeError:
            speed = None
    return df, Run(path=path, meta=meta, speed=speed)


def load_runs(run_dirs: list[Path]) -> RunSet:
    if not run_dirs:
        raise FeatbenchError("no run folders given")
    frames, runs = [], []
    seen: dict[str, Path] = {}
    for i, d in enumerate(run_dirs):
        df, run = load_run(Path(d))
        if run.run_id in seen and seen[run.run_id].resolve() != run.path.resolve():
            raise FeatbenchError(f"{run.path} and {seen[run.run_id]} hold the same run ({run.run_id})")
        if run.run_id in seen:
            continue  # the same folder named twice
        seen[run.run_id] = run.path
        df = df.copy()
        df["_run"] = len(runs)
        frames.append(df)
        runs.append(run)
    df = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) \
        else pd.DataFrame(columns=current_columns() + ["_run"])
    return RunSet(df=normalise(df), runs=runs)
