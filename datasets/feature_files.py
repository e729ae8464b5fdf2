"""Published feature files: reading them, and datasets whose "images" are their rows.

The classic domain-adaptation tables (Office-Caltech-10 with SURF-800 bags of words, DeCAF /
CaffeNet and GoogLeNet activations) were made from feature files released with the papers, not
from pixels. featbench reads them in two ways:

* the ``precomputed`` extractor (:mod:`featbench.features.precomputed`) gives an image dataset's
  records the features a file holds for them (matched by path, order or key);
* a **feature-file dataset**: a folder of such files, one per domain (``amazon.mat``,
  ``webcam.mat``, ...), read as a domain-shift dataset whose records are the files' rows. Its
  tasks are named like any other (``office_caltech10_surf:amazon->webcam``) and go through the
  same protocols, adaptation methods, classifiers, records and reports; the extractor is
  ``precomputed`` (no path: each record brings its own row).

File formats (:func:`read_feature_file`):

=============  =====================================================================================
``.mat``       MATLAB v5 (``scipy.io.loadmat``): a feature matrix (``fts`` in GFK's SURF releases,
               ``feas`` in the DeCAF6 ones; also ``features``, ``X``, ``data``) and ``labels`` (also
               ``label``, ``y``, ``gnd``); optional ``paths``/``imgNames`` and ``keys``. v7.3 files
               are HDF5 and need ``h5py`` (MATLAB stores them transposed; handled).
``.npz``       arrays ``features`` (or ``X``), optional ``labels``, ``paths``, ``keys``, ``domains``
``.npy``       a feature matrix; optional ``NAME.index.txt`` beside it, one path or key per row
``.parquet``   one row per image: ``path`` and/or ``key`` (columns, or the index: paths unless it is
               named ``key``), optional ``label`` and ``domain``, and the features in a list column
               ``features`` or in every other numeric column
=============  =====================================================================================

A feature-file dataset folder holds one file per domain (the file stem is the domain) and
optionally ``classes.txt``: one class name per line, in the order of the sorted label values
(label 1 -> first line for the 1-based MATLAB releases). Without it classes are named
``class_<label>``. Each record's ``uid`` is the sha256 of (file sha256, row), ``relpath``
``<domain>/<row>``; the dataset identity therefore changes when a file does.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from featbench.errors import FeatbenchError

from .folder import Dataset, ImageRecord, sha256_file
from .info import DatasetInfo

FEATURE_SUFFIXES = (".mat", ".npz", ".npy", ".parquet")
FEATURE_KEYS = ("fts", "feas", "features", "feats", "X", "x", "data")
LABEL_KEYS = ("labels", "label", "y", "Y", "gnd")
PATH_KEYS = ("paths", "path", "imgNames", "files", "names")
KEY_KEYS = ("keys", "key", "ids", "sha256")


@dataclasses.dataclass
class FeatureTable:
    """The contents of one feature file, rows in file order."""

    path: str
    sha256: str
    X: np.ndarray  # float32 [n, d]
    labels: np.ndarray | None = None
    paths: list[str] | None = None
    keys: list[str] | None = None
    domains: list[str] | None = None
    feature_key: str = ""


def _pick(data: dict[str, Any], wanted: str | None, candidates: tuple[str, ...], what: str, path: Path,
          required: bool) -> tuple[str, Any]:
    if wanted:
        if wanted not in data:
            raise FeatbenchError(f"{path}: no {what} named '{wanted}' (has: {', '.join(sorted(data))})")
        return wanted, data[wanted]
    for key in candidates:
        if key in data:
            return key, data[key]
    if required:
        raise FeatbenchError(f"{path}: no {what} found (looked for {', '.join(candidates)}; has: "
                             f"{', '.join(sorted(data)) or 'nothing'}); name it with the extractor option")
    return "", None


def _strings(value: Any) -> list[str]:
    """MATLAB cell arrays / char matrices / numpy string arrays -> list of str."""
    arr = np.asarray(value, dtype=object).ravel()
    out = []
    for v in arr:
        while isinstance(v, np.ndarray) and v.dtype == object and v.size == 1:
            v = v.ravel()[0]
        if isinstance(v, np.ndarray):
            v = "".join(v.ravel().tolist()) if v.dtype.kind == "U" else v.ravel()[0]
        out.append(str(v).strip())
    return out


def _read_mat(path: Path) -> dict[str, Any]:
    import scipy.io

    try:
        return {k: v for k, v in scipy.io.loadmat(str(path)).items() if not k.startswith("__")}
    except NotImplementedError:  # MATLAB v7.3: HDF5
        try:
            import h5py
        except ImportError:
            raise FeatbenchError(f"{path}: a MATLAB v7.3 (HDF5) file; install h5py to read it "
                                 "(pip install h5py)") from None
        with h5py.File(str(path), "r") as fh:  # MATLAB writes column-major: transpose back
            return {k: np.asarray(fh[k]).T for k in fh.keys() if isinstance(fh[k], h5py.Dataset)}
    except (ValueError, OSError) as exc:
        raise FeatbenchError(f"{path}: not a readable MATLAB file ({exc})") from None


def _read_parquet(path: Path) -> dict[str, Any]:
    import pandas as pd

    df = pd.read_parquet(path)
    if not isinstance(df.index, pd.RangeIndex):  # an index of paths or keys, as DataFrame.to_parquet keeps it
        df = df.rename_axis(df.index.name if df.index.name in ("path", "key") else "path").reset_index()
    out: dict[str, Any] = {}
    for col, key in (("path", "paths"), ("key", "keys"), ("label", "labels"), ("domain", "domains")):
        if col in df.columns:
            out[key] = df[col].to_numpy()
    if "features" in df.columns:
        out["features"] = np.stack(df["features"].to_numpy())
    else:
        numeric = [c for c in df.columns if c not in ("path", "key", "label", "domain")
                   and pd.api.types.is_numeric_dtype(df[c])]
        if numeric:
            out["features"] = df[numeric].to_numpy()
    return out


def _read_npy(path: Path) -> dict[str, Any]:
    out: dict[str, Any] = {"features": np.load(path, allow_pickle=False)}
    index = path.with_suffix(".index.txt")
    if index.is_file():
        out["paths"] = np.array([l.strip() for l in index.read_text().splitlines() if l.strip()])
    return out


@functools.lru_cache(maxsize=64)
def _read_cached(path: str, mtime: float, features: str | None, labels: str | None) -> FeatureTable:
    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".mat":
            data = _read_mat(p)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        elif suffix == ".npy":
            data = _read_npy(p)
        elif suffix == ".parquet":
            data = _read_parquet(p)
        else:
            raise FeatbenchError(f"{p}: unknown feature file type (known: {', '.join(FEATURE_SUFFIXES)})")
    except FeatbenchError:
        raise
    except Exception as exc:  # a corrupt file of a known type
        raise FeatbenchError(f"{p}: cannot read ({type(exc).__name__}: {exc})") from None
    fkey, X = _pick(data, features, FEATURE_KEYS, "feature matrix", p, required=True)
    X = np.asarray(X)
    if X.ndim != 2 or X.dtype.kind not in "iufb":
        raise FeatbenchError(f"{p}: '{fkey}' is not a 2-D numeric matrix (shape {X.shape}, dtype {X.dtype})")
    n = len(X)
    _, y = _pick(data, labels, LABEL_KEYS, "labels", p, required=bool(labels))
    if y is not None:
        y = np.asarray(y).ravel()
        if len(y) != n:
            raise FeatbenchError(f"{p}: {len(y)} labels for {n} feature rows")
    found = {}
    for name, keys in (("paths", PATH_KEYS), ("keys", KEY_KEYS), ("domains", ("domains", "domain"))):
        _, v = _pick(data, None, keys, name, p, required=False)
        if v is not None:
            found[name] = _strings(v)
            if len(found[name]) != n:
                raise FeatbenchError(f"{p}: {len(found[name])} {name} for {n} feature rows")
    return FeatureTable(path=str(p), sha256=sha256_file(p), X=X.astype(np.float32), labels=y,
                        feature_key=fkey, **found)


def read_feature_file(path: str | Path, features: str | None = None, labels: str | None = None) -> FeatureTable:
    """Read one feature file (module docstring); a FeatbenchError naming the file on any problem."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FeatbenchError(f"feature file not found: {p}")
    return _read_cached(str(p.resolve()), p.stat().st_mtime, features, labels)


# -- preprocessing as the releases' own code does it ----------------------------------------------

NORMS = ("none", "l1", "l2")
ZSCORES = ("none", "domain")


def preprocess(X: np.ndarray, norm: str = "none", zscore: str = "none",
               domains: list[str] | None = None) -> np.ndarray:
    """Row normalisation, then z-scoring per domain over all its rows (float64 inside).

    ``norm=l1`` divides each histogram by its sum (GFK's README: ``fts ./ repmat(sum(fts,2),..)``);
    ``zscore=domain`` standardises each column with the mean and population std (``zscore(fts,1)``,
    ``sklearn.preprocessing.scale``) of every row of the same domain; constant columns stay 0.
    """
    Z = np.asarray(X, dtype=np.float64)
    if norm == "l1":
        s = np.abs(Z).sum(axis=1, keepdims=True)
        Z = Z / np.where(s > 0, s, 1.0)
    elif norm == "l2":
        s = np.linalg.norm(Z, axis=1, keepdims=True)
        Z = Z / np.where(s > 0, s, 1.0)
    if zscore == "domain":
        groups = np.asarray(domains if domains is not None else [""] * len(Z))
        out = np.empty_like(Z)
        for g in np.unique(groups):
            rows = groups == g
            mean, std = Z[rows].mean(axis=0), Z[rows].std(axis=0)
            out[rows] = (Z[rows] - mean) / np.where(std > 1e-12, std, 1.0)
        Z = out
    return Z.astype(np.float32)


# -- datasets whose records are rows of feature files ----------------------------------------------

@dataclasses.dataclass(frozen=True, eq=False)
class FeatureRowRecord(ImageRecord):
    """One row of a feature file standing in for an image (no pixels)."""

    row: int = -1

    def load(self) -> np.ndarray:
        raise FeatbenchError(f"{self.path} row {self.row}: a row of a feature file, not an image; "
                             "use the 'precomputed' extractor on this dataset")


def feature_files_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in FEATURE_SUFFIXES
                  and not p.name.startswith("."))


def is_feature_folder(folder: Path) -> bool:
    """A folder of feature files and no sub-folders (cheap: names only)."""
    folder = Path(folder)
    if not folder.is_dir() or any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        return False
    return bool(feature_files_in(folder))


def read_feature_dataset(folder: str | Path, name: str | None = None) -> Dataset:
    """A domain-shift dataset from a folder with one feature file per domain (module docstring)."""
    folder = Path(folder)
    name = name or folder.name
    files = feature_files_in(folder)
    if not files:
        raise FeatbenchError(f"{folder}: no feature files ({', '.join(FEATURE_SUFFIXES)})")
    tables = {f.stem: read_feature_file(f) for f in files}
    dims = {t.X.shape[1] for t in tables.values()}
    if len(dims) > 1:
        raise FeatbenchError(f"{folder}: feature files of different dimensions "
                             f"({', '.join(f'{k}: {t.X.shape[1]}' for k, t in tables.items())})")
    for domain, t in tables.items():
        if t.labels is None:
            raise FeatbenchError(f"{t.path}: no labels; a feature-file dataset needs them")
    values = sorted({v.item() if hasattr(v, "item") else v for t in tables.values() for v in t.labels})
    classes_txt = folder / "classes.txt"
    if classes_txt.is_file():
        names = [l.strip() for l in classes_txt.read_text().splitlines() if l.strip()]
        if len(names) != len(values):
            raise FeatbenchError(f"{classes_txt}: {len(names)} class names for {len(values)} label values "
                                 f"({values[0]}..{values[-1]})")
        class_of = dict(zip(values, names))
    else:
        class_of = {v: f"class_{v}" for v in values}
    records: list[ImageRecord] = []
    for domain, t in tables.items():
        for i, lab in enumerate(t.labels):
            uid = hashlib.sha256(f"{t.sha256}:{i}".encode()).hexdigest()
            records.append(FeatureRowRecord(uid=uid, label=class_of[lab.item() if hasattr(lab, "item") else lab],
                                            group=domain, relpath=f"{domain}/{i:06d}", path=t.path, row=i))
    # no anchors: published tables are set beside these tasks by reports/reproductions.py instead
    info = DatasetInfo("domain", layout="feature-files")
    return Dataset(name=name, records=records, root=str(folder), source="feature-files", info=info)
