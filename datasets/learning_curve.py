"""Learning curves: any task's own protocol, with its training images cut to ``n`` per class.

A suite task with ``train_per_class = [1, 2, 5, 10, 20, 30]`` becomes one task per size, named
``TASK#n=5`` (the ``#LABEL`` keeps them apart in records and reports), each with the task's
protocol wrapped in :class:`TrainSubsample`. For every trial, the wrapped protocol's split is
drawn first (its seed, its test set); then ``n`` training images per class are drawn from that
split's training images with the same seed. The test set therefore does not change with ``n``,
and a size-``n`` training set is a subset of the size-``m`` one for ``n < m`` within a trial
(the draw takes a prefix of one seeded permutation per class), as in DeCAF's Figure 4 sweep
(Caltech-101, 1 to 30 training images per class).

Domain-shift tasks cut the *source* images (``Split.train``); labelled target images
(source+target protocols) are kept as they are.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from featbench.errors import FeatbenchError

from .protocols import Protocol, Split, by_class


def curve_sizes(value: Any, where: str) -> list[int]:
    """Validate a ``train_per_class`` list: distinct positive integers, sorted."""
    values = value if isinstance(value, list) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in values):
        raise FeatbenchError(f"{where}: train_per_class must be a list of positive integers, not {value!r}")
    return sorted(set(values))


def curve_task_name(task: str, n: int) -> str:
    return f"{task}#n={n}"


def curve_size_of(task_name: str) -> int | None:
    """``TASK#n=5`` -> 5; ``None`` for a task that is not a learning-curve point."""
    label = task_name.partition("#")[2]
    if label.startswith("n="):
        try:
            return int(label[2:])
        except ValueError:
            return None
    return None


class TrainSubsample(Protocol):
    """``inner``'s split with the training images cut to ``n`` per class (same seed)."""

    name = "train-subsample"

    def __init__(self, inner: Protocol, n: int) -> None:
        super().__init__(duplicates=inner.params["duplicates"], missing_classes=inner.params["missing_classes"])
        self.inner, self.n = inner, int(n)
        self.needs_domains = inner.needs_domains
        self.gives_target_labels = inner.gives_target_labels
        self.default_trials = inner.default_trials

    @property
    def deterministic(self) -> bool:
        return False  # the draw of n per class differs between trials even on a fixed split

    def describe(self) -> str:
        return f"{self.inner.describe()}+train_per_class={self.n}"

    def make_split(self, dataset, seed, source=None, target=None) -> Split:
        split = self.inner.split(dataset, seed, source=source, target=target)
        rng = np.random.default_rng([seed, 104729])  # not the inner protocol's own stream
        train, notes = [], []
        for label, recs in by_class(split.train).items():
            order = rng.permutation(len(recs))
            if len(recs) < self.n:
                notes.append(f"learning curve: class '{label}' has {len(recs)} < {self.n} training images; all used")
            train += [recs[i] for i in sorted(order[:self.n].tolist())]
        return Split(train=train, test=split.test, target_train=split.target_train,
                     notes=split.notes + notes, stats=dict(split.stats))
