"""The result record: one scored (task, trial, extractor output, method, classifier), written once.

:class:`ResultRecord`'s fields, in order, are the columns of ``results.csv`` / ``results.parquet``
and the keys of each ``results.jsonl`` line; the runner writes them, the corpus
(``results/*.jsonl``) keeps them and the reports read them. The schema is additive-only: a new
field goes at the end, made with ``_added()``, so older records still read
(:func:`featbench.reports.data.normalise` fills what they lack).

This module imports nothing heavy (no torch): the reports use it.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


def _added(default: Any = "") -> Any:
    """A field added after schema v1 (additive: older records lack it)."""
    return dataclasses.field(default=default, metadata={"added": True})


@dataclasses.dataclass
class ResultRecord:
    schema_version: int
    featbench_version: str
    run_id: str
    suite: str
    task: str
    family: str
    dataset: str
    dataset_id: str
    protocol: str
    method: str
    trial: int
    seed: int
    extractor: str
    extractor_family: str
    layer: str
    extractor_config: str
    weights: str
    classifier: str
    C: float
    cv_score: float
    top1: float
    mean_class_acc: float
    n_train: int
    n_test: int
    dim: int
    extract_s: float
    img_per_s: float
    fit_s: float
    device: str
    #: where img_per_s comes from: 'measured' in this run, or 'cache' (recorded when the cached
    #: features were computed)
    img_per_s_source: str = _added()
    #: the dataset's facts (featbench.datasets.info.DatasetInfo), so reports need not guess them
    headline_metric: str = _added()
    dataset_layout: str = _added()
    anchors_key: str = _added()
    #: the transfer study: the learning-curve size (training images per class; None off a curve),
    #: and for fine-tuning rows the recipe (JSON), the chosen epoch count, training seconds and
    #: training images/s (forward + backward)
    train_per_class: int | None = _added(None)
    recipe: str = _added()
    epochs: int | None = _added(None)
    train_s: float | None = _added(None)
    train_img_per_s: float | None = _added(None)
    #: the linear classifier's solver: 'torch' (featbench.probe) or 'sklearn'; its tolerance and
    #: iteration cap, the iterations of the final fit, and whether every fit of the record (CV
    #: included) reached the tolerance. Records without them were fitted by scikit-learn at tol=1e-4.
    solver: str = _added()
    tol: float | None = _added(None)
    max_iter: int | None = _added(None)
    n_iter: int | None = _added(None)
    converged: bool | None = _added(None)
    #: True when the evaluation was read back from the evaluation cache (same features, labels,
    #: settings and solver code as an earlier run; featbench.evaluation_cache): fit_s is then the
    #: seconds the original fit took, not this run's
    fit_reused: bool | None = _added(None)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


#: results.csv's columns, in order
RESULT_COLUMNS: list[str] = [f.name for f in dataclasses.fields(ResultRecord)]
#: the columns of schema v1, frozen: every committed corpus record has them
SCHEMA_V1_COLUMNS: list[str] = [f.name for f in dataclasses.fields(ResultRecord) if not f.metadata.get("added")]


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` for what run folders, speed files and the corpus hold: numpy
    scalars and arrays as numbers and lists, anything else (paths, devices) as its string."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)
