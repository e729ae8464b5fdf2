"""Task protocols: how a dataset becomes train/test splits for each trial.

A protocol is a small object with a ``name``, a default number of ``trials`` and a
``split(dataset, trial_seed, source=None, target=None) -> Split`` method. Splits are
deterministic functions of (dataset, protocol options, seed), so a rerun reuses cached
features and reproduces the numbers. Register new ones with :func:`register_protocol`.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, ClassVar

import numpy as np

from featbench.errors import FeatbenchError

from .folder import Dataset, ImageRecord


@dataclasses.dataclass
class Split:
    train: list[ImageRecord]
    test: list[ImageRecord]
    #: labelled target-domain images added to training (source+target protocols)
    target_train: list[ImageRecord] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)


class Protocol:
    name: ClassVar[str] = ""
    #: trials run when the suite does not say; 1 for fixed splits
    default_trials: ClassVar[int] = 1
    #: True when the protocol needs SOURCE->TARGET domains
    needs_domains: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, **kwargs: Any) -> None:
        unknown = sorted(set(kwargs) - set(self.options))
        if unknown:
            raise FeatbenchError(f"protocol '{self.name}': unknown option(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(self.options)) or 'none'}")
        self.params = {**self.options, **kwargs}

    @property
    def deterministic(self) -> bool:
        """True when every trial gets the same split (then one trial is enough)."""
        return False

    def describe(self) -> str:
        opts = ",".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return self.name + (f":{opts}" if opts else "")

    def split(self, dataset: Dataset, seed: int, source: str | None = None, target: str | None = None) -> Split:
        raise NotImplementedError


_PROTOCOLS: dict[str, type[Protocol]] = {}


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    _PROTOCOLS[cls.name] = cls
    return cls


def protocols() -> dict[str, type[Protocol]]:
    return dict(sorted(_PROTOCOLS.items()))


def make_protocol(name: str, **options: Any) -> Protocol:
    if name not in _PROTOCOLS:
        raise FeatbenchError(f"unknown protocol '{name}'; known: {', '.join(sorted(_PROTOCOLS))}")
    return _PROTOCOLS[name](**options)


def by_class(records: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    out: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.relpath):
        out[r.label].append(r)
    return dict(sorted(out.items()))


def sample_per_class(records: list[ImageRecord], n: int, rng: np.random.Generator,
                     what: str) -> tuple[list[ImageRecord], list[ImageRecord], list[str]]:
    """Draw ``n`` per class (all when a class is smaller, noted); return (drawn, rest, notes)."""
    drawn, rest, notes = [], [], []
    for label, recs in by_class(records).items():
        order = rng.permutation(len(recs))
        if len(recs) < n:
            notes.append(f"{what}: class '{label}' has {len(recs)} < {n} images; all used")
        take = set(order[:n].tolist())
        drawn += [r for i, r in enumerate(recs) if i in take]
        rest += [r for i, r in enumerate(recs) if i not in take]
    return drawn, rest, notes


@register_protocol
class GivenSplit(Protocol):
    """The dataset's own train/test folders."""

    name = "given"
    options = {"train": "train", "test": "test"}

    @property
    def deterministic(self) -> bool:
        return True

    def split(self, dataset, seed, source=None, target=None):
        return Split(train=dataset.in_group(self.params["train"]), test=dataset.in_group(self.params["test"]))


@register_protocol
class PerClassSplit(Protocol):
    """Random ``train`` images per class for training, up to ``test`` of the rest for testing."""

    name = "per-class"
    default_trials = 5
    options = {"train": 30, "test": 50, "pool": "all", "exclude": ""}

    def split(self, dataset, seed, source=None, target=None):
        rng = np.random.default_rng(seed)
        records = dataset.records if self.params["pool"] == "all" else dataset.in_group(self.params["pool"])
        excluded = {c for c in str(self.params["exclude"]).split("+") if c}
        records = [r for r in records if r.label not in excluded]
        train, rest, notes = sample_per_class(records, int(self.params["train"]), rng, "train")
        test, _, _ = sample_per_class(rest, int(self.params["test"]), rng, "test")
        return Split(train=train, test=test, notes=notes)


@register_protocol
class SourceOnlyFull(Protocol):
    """Domain shift: train on the whole source domain, test on the whole target domain."""

    name = "source-only-full"
    needs_domains = True

    @property
    def deterministic(self) -> bool:
        return True

    def split(self, dataset, seed, source=None, target=None):
        return Split(train=dataset.in_group(source), test=dataset.in_group(target))

