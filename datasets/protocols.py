"""Task protocols: how a dataset becomes train/test splits for each trial.

A protocol is a small object with a ``name``, a default number of ``trials`` and a
``split(dataset, trial_seed, source=None, target=None) -> Split`` method. Splits are
deterministic functions of (dataset, protocol options, seed), so a rerun reuses cached
features and reproduces the numbers. Register new ones with :func:`register_protocol`;
subclasses implement ``make_split`` and the base class checks every split
(:func:`featbench.datasets.validation.validate_split`).

Protocols (``featbench list protocols``), with the literature they reproduce:

==========================  ==========================================================================
``given``                   the dataset's own train/test groups (CUB-200-2011, MIT Indoor-67, Flowers-102,
                            Oxford-IIIT Pets, the shared ``*_mini`` subsets); ``crop=1.5`` crops CUB images
                            to their bounding box enlarged 1.5x (DeCAF)
``per-class``               ``train`` random images per class, up to ``test`` of the rest (generic)
``caltech101-30``           Caltech-101 as in Lazebnik et al. 2006 / DeCAF: 30 train per class, up to 50
                            test per class from the rest, ``BACKGROUND_Google`` excluded, 5 trials;
                            train and test folders of a given split are pooled first
``caltech101-15``           the same with 15 training images per class
``scene15-100``             15-Scene (Lazebnik et al. 2006): 100 train per class, all the rest test, 5 trials
``sun397-partitions``       SUN-397 official partitions (Xiao et al. 2010: 50 train / 50 test per class,
                            10 partitions); trial seed ``s`` uses partition ``s % 10 + 1``
``source-only-full``        domain shift: the whole source domain -> the whole target domain (Gong 2012)
``source-only-sampled``     Saenko et al. 2010 / DeCAF: 20 source images per class (amazon, caltech) or
                            8 (dslr, webcam), tested on the whole target domain, 5 trials;
                            ``small_domains="dslr"``: 8 only from dslr (the SURF tables' public reproductions)
``source+target``           the same source sample plus 3 labelled target images per class
                            (``Split.target_train``), tested on the remaining target images, 5 trials
==========================  ==========================================================================

Every protocol also accepts two validation options (shown in ``describe()`` only when changed):

* ``duplicates = "drop"`` (default) removes from the test set every image whose exact copy
  (same sha256 uid) is among the training images, and notes how many; ``"keep"`` keeps them and
  only notes the count (the classifier then sees those test images in training).
* ``missing_classes = "error"`` (default) refuses a split with test images of a class that has no
  training image; ``"drop"`` removes those test images and notes it.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from typing import Any, ClassVar

import numpy as np

from featbench.errors import FeatbenchError
from featbench.registry import Registry

from .folder import Dataset, ImageRecord


@dataclasses.dataclass
class Split:
    train: list[ImageRecord]
    test: list[ImageRecord]
    #: labelled target-domain images added to training (source+target protocols)
    target_train: list[ImageRecord] = dataclasses.field(default_factory=list)
    #: human-readable remarks for the report (small classes, duplicates, fallbacks)
    notes: list[str] = dataclasses.field(default_factory=list)
    #: machine-readable counts from validation (duplicates_dropped, duplicates_kept, ...)
    stats: dict[str, int] = dataclasses.field(default_factory=dict)


#: options every protocol accepts, with their defaults (see the module docstring)
COMMON_OPTIONS: dict[str, Any] = {"duplicates": "drop", "missing_classes": "error"}
_CHOICES = {"duplicates": ("drop", "keep"), "missing_classes": ("error", "drop")}


class Protocol:
    name: ClassVar[str] = ""
    #: trials run when the suite does not say; 1 for fixed splits
    default_trials: ClassVar[int] = 1
    #: True when the protocol needs SOURCE->TARGET domains
    needs_domains: ClassVar[bool] = False
    #: True when its splits carry labelled target images (``Split.target_train``); adaptation
    #: methods that need them (``daume``) can be refused before any feature is extracted
    gives_target_labels: ClassVar[bool] = False
    options: ClassVar[dict[str, Any]] = {}
    #: own options left out of describe() while they hold their default
    quiet_options: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **kwargs: Any) -> None:
        known = {**COMMON_OPTIONS, **self.options}
        unknown = sorted(set(kwargs) - set(known))
        if unknown:
            raise FeatbenchError(f"protocol '{self.name}': unknown option(s) {', '.join(unknown)}; "
                                 f"known: {', '.join(sorted(known)) or 'none'}")
        self.params = {**known, **kwargs}
        for key, choices in _CHOICES.items():
            if self.params[key] not in choices:
                raise FeatbenchError(f"protocol '{self.name}': {key} must be one of {', '.join(choices)}, "
                                     f"not {self.params[key]!r}")

    @property
    def deterministic(self) -> bool:
        """True when every trial gets the same split (then one trial is enough)."""
        return False

    def describe(self) -> str:
        shown = {}
        for k, v in sorted(self.params.items()):
            default = self.options.get(k, COMMON_OPTIONS.get(k))
            if v in ("", None, [], ()):
                continue
            if k in self.options and k not in self.quiet_options or v != default:
                shown[k] = "+".join(map(str, v)) if isinstance(v, (list, tuple)) else v
        opts = ",".join(f"{k}={v}" for k, v in shown.items())
        return self.name + (f":{opts}" if opts else "")

    def split(self, dataset: Dataset, seed: int, source: str | None = None, target: str | None = None) -> Split:
        """The checked split for one trial seed (see :mod:`featbench.datasets.validation`)."""
        from .validation import validate_split

        split = self.make_split(dataset, seed, source=source, target=target)
        return validate_split(split, what=f"{dataset.name} ({self.describe()})",
                              duplicates=self.params["duplicates"],
                              missing_classes=self.params["missing_classes"])

    def make_split(self, dataset: Dataset, seed: int, source: str | None = None,
                   target: str | None = None) -> Split:
        raise NotImplementedError


#: protocol name -> Protocol subclass
PROTOCOLS: Registry[type[Protocol]] = Registry("protocol", entry_points="featbench.protocols")


def register_protocol(cls: type[Protocol]) -> type[Protocol]:
    return PROTOCOLS.register(cls.name, cls)


def protocols() -> dict[str, type[Protocol]]:
    return {name: e.obj for name, e in sorted(PROTOCOLS.items())}


def make_protocol(name: str, **options: Any) -> Protocol:
    return PROTOCOLS.get(name)(**options)


# -- helpers ---------------------------------------------------------------------------------

def by_class(records: list[ImageRecord]) -> dict[str, list[ImageRecord]]:
    out: dict[str, list[ImageRecord]] = defaultdict(list)
    for r in sorted(records, key=lambda r: r.relpath):
        out[r.label].append(r)
    return dict(sorted(out.items()))


def sample_per_class(records: list[ImageRecord], n: int | None, rng: np.random.Generator,
                     what: str) -> tuple[list[ImageRecord], list[ImageRecord], list[str]]:
    """Draw ``n`` per class (all when a class is smaller, noted; ``None``: all); return (drawn, rest, notes).

    Records are ordered by relpath before drawing, so the draw depends only on the seed and
    the set of files, not on the order a reader listed them in.
    """
    drawn, rest, notes = [], [], []
    for label, recs in by_class(records).items():
        order = rng.permutation(len(recs))
        if n is None:
            take = set(range(len(recs)))
        else:
            if len(recs) < n:
                notes.append(f"{what}: class '{label}' has {len(recs)} < {n} images; all used")
            take = set(order[:n].tolist())
        drawn += [r for i, r in enumerate(recs) if i in take]
        rest += [r for i, r in enumerate(recs) if i not in take]
    return drawn, rest, notes


def group_names(value: Any) -> list[str]:
    """``"train+val"`` or ``["train", "val"]`` -> ``["train", "val"]``."""
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if str(v)]
    return [v for v in str(value).split("+") if v]


def records_in(dataset: Dataset, groups: Any) -> list[ImageRecord]:
    out: list[ImageRecord] = []
    for g in group_names(groups):
        out += dataset.in_group(g)
    return out


def _count(value: Any, option: str, protocol: str, allow_all: bool = False) -> int | None:
    """An option that is a positive count (or, with ``allow_all``, ``"all"``/0 meaning every image)."""
    if allow_all and (value in ("all", 0, None)):
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FeatbenchError(f"protocol '{protocol}': {option} must be a positive integer"
                             + (" or \"all\"" if allow_all else "") + f", not {value!r}")
    return value


# -- fixed splits ------------------------------------------------------------------------------

@register_protocol
class GivenSplit(Protocol):
    """The dataset's own train/test groups (CUB, Indoor-67, Flowers, Pets, shared minis); crop=1.5 for CUB boxes."""

    name = "given"
    #: train "auto": every group except the test group (Flowers-102: train+val)
    options = {"train": "auto", "test": "test", "crop": 0}
    quiet_options = frozenset({"crop"})

    @property
    def deterministic(self) -> bool:
        return True

    def make_split(self, dataset, seed, source=None, target=None):
        test_groups = group_names(self.params["test"])
        train_groups = self.params["train"]
        if train_groups == "auto":
            train_groups = [g for g in dataset.groups if g not in test_groups and g != "all"]
            if not train_groups:
                raise FeatbenchError(
                    f"protocol 'given': dataset '{dataset.name}' has no training group besides "
                    f"{'+'.join(test_groups)} (groups: {', '.join(dataset.groups)}); use 'per-class'")
        train, test = records_in(dataset, train_groups), records_in(dataset, test_groups)
        notes = []
        crop = float(self.params["crop"] or 0)
        if crop:
            from .readers import crop_records

            train, test = crop_records(dataset, train, crop), crop_records(dataset, test, crop)
            notes.append(f"images cropped to their bounding box enlarged {crop:g}x about its centre")
        return Split(train=train, test=test, notes=notes)


# -- per-class sampling ------------------------------------------------------------------------

@register_protocol
class PerClassSplit(Protocol):
    """Random ``train`` images per class for training, up to ``test`` of the rest for testing."""

    name = "per-class"
    default_trials = 5
    #: test "all" (or 0): every remaining image; pool "all" or groups such as "train+test";
    #: exclude: classes left out ("A+B" or a list)
    options: ClassVar[dict[str, Any]] = {"train": 30, "test": 50, "pool": "all", "exclude": ""}
    #: presets fix the training count instead of exposing it as an option
    fixed_train: ClassVar[int | None] = None

    def make_split(self, dataset, seed, source=None, target=None):
        rng = np.random.default_rng(seed)
        pool = self.params["pool"]
        records = dataset.records if pool == "all" else records_in(dataset, pool)
        excluded = set(group_names(self.params["exclude"]))
        unknown = sorted(excluded - set(dataset.classes))
        notes = [f"excluded class(es) not in the dataset: {', '.join(unknown)}"] if unknown else []
        if excluded & set(dataset.classes):
            notes.append(f"classes excluded: {', '.join(sorted(excluded & set(dataset.classes)))}")
        records = [r for r in records if r.label not in excluded]
        n_train = _count(self.fixed_train or self.params["train"], "train", self.name)
        n_test = _count(self.params["test"], "test", self.name, allow_all=True)
        train, rest, train_notes = sample_per_class(records, n_train, rng, "train")
        test, _, _ = sample_per_class(rest, n_test, rng, "test")
        return Split(train=train, test=test, notes=notes + train_notes)


@register_protocol
class Caltech101_30(PerClassSplit):
    """Caltech-101 (Lazebnik 2006, DeCAF): 30 train/class, up to 50 test/class from the rest, no background."""

    name = "caltech101-30"
    options = {"test": 50, "pool": "all", "exclude": "BACKGROUND_Google"}
    fixed_train = 30


@register_protocol
class Caltech101_15(PerClassSplit):
    """Caltech-101 with 15 train/class, up to 50 test/class from the rest, no background."""

    name = "caltech101-15"
    options = {"test": 50, "pool": "all", "exclude": "BACKGROUND_Google"}
    fixed_train = 15


@register_protocol
class Scene15_100(PerClassSplit):
    """15-Scene (Lazebnik 2006): train and test pooled, 100 train/class, all the rest test, 5 trials."""

    name = "scene15-100"
    options = {"test": "all", "pool": "all", "exclude": ""}
    fixed_train = 100


@register_protocol
class Sun397Partitions(Protocol):
    """SUN-397 official partitions (50 train / 50 test per class); seed s -> partition s % 10 + 1."""

    name = "sun397-partitions"
    default_trials = 10
    #: partition "auto" follows the trial seed; 1..10 fixes one (then one trial);
    #: fallback "sample": without partition files draw 50/50 per class (noted); "error": refuse
    options = {"partition": "auto", "fallback": "sample"}

    @property
    def deterministic(self) -> bool:
        return self.params["partition"] != "auto"

    def make_split(self, dataset, seed, source=None, target=None):
        partitions = getattr(dataset, "partitions", None) or []
        if not partitions:
            if self.params["fallback"] != "sample":
                raise FeatbenchError(
                    f"protocol '{self.name}': dataset '{dataset.name}' has no partition files "
                    "(Training_01.txt ... Testing_10.txt from SUN397's Partitions.zip; torchvision does not ship them)")
            rng = np.random.default_rng(seed)
            train, rest, notes = sample_per_class(dataset.records, 50, rng, "train")
            test, _, _ = sample_per_class(rest, 50, rng, "test")
            return Split(train=train, test=test, notes=notes + [
                "no official SUN-397 partition files found: 50 train / 50 test per class drawn at random "
                "(not the official partitions; put Training_NN.txt / Testing_NN.txt next to ClassName.txt)"])
        part = self.params["partition"]
        index = seed % len(partitions) if part == "auto" else _count(part, "partition", self.name) - 1
        if index >= len(partitions):
            raise FeatbenchError(f"protocol '{self.name}': partition {part} but only {len(partitions)} found")
        train_paths, test_paths = partitions[index]
        by_path = {r.relpath: r for r in dataset.records}
        missing = sorted((set(train_paths) | set(test_paths)) - set(by_path))
        if missing:
            raise FeatbenchError(f"protocol '{self.name}': partition {index + 1} lists {len(missing)} image(s) "
                                 f"not in '{dataset.name}', e.g. {missing[0]}")
        return Split(train=[by_path[p] for p in sorted(train_paths)], test=[by_path[p] for p in sorted(test_paths)],
                     notes=[f"SUN-397 official partition {index + 1} of {len(partitions)}"])


# -- domain shifts -----------------------------------------------------------------------------

#: Saenko et al. 2010: 20 source images per class from amazon (and caltech in Office-Caltech-10),
#: 8 from the small domains dslr and webcam
SMALL_DOMAINS = frozenset({"dslr", "webcam"})


def saenko_source_count(domain: str, small_domains: frozenset[str] | set[str] = SMALL_DOMAINS) -> int:
    return 8 if domain.lower() in small_domains else 20


@register_protocol
class SourceOnlyFull(Protocol):
    """Domain shift: train on the whole source domain, test on the whole target domain."""

    name = "source-only-full"
    needs_domains = True

    @property
    def deterministic(self) -> bool:
        return True

    def make_split(self, dataset, seed, source=None, target=None):
        return Split(train=dataset.in_group(source), test=dataset.in_group(target))


def _source_sample(dataset: Dataset, source: str, per_class: Any, rng: np.random.Generator,
                   protocol: str, small_domains: Any = "dslr+webcam") -> tuple[list[ImageRecord], list[str]]:
    records = dataset.in_group(source)
    if per_class == "all":
        return records, []
    small = {d.lower() for d in group_names(small_domains)}
    n = saenko_source_count(source, small) if per_class == "auto" else _count(per_class, "per_class", protocol)
    drawn, _, notes = sample_per_class(records, n, rng, f"source {source}")
    return drawn, notes + [f"source: {n} images per class from {source}"]


@register_protocol
class SourceOnlySampled(Protocol):
    """Saenko 2010 / DeCAF: 20 source images/class (amazon, caltech) or 8 (dslr, webcam); test: whole target."""

    name = "source-only-sampled"
    needs_domains = True
    default_trials = 5
    #: per_class "auto" (20, or 8 from the small_domains), an integer, or "all". small_domains: the
    #: domains that give 8 per class under "auto" (Saenko/DeCAF: dslr and webcam; the SURF tables of
    #: Gong et al. 2012 and their public reproductions sample 8 only from dslr: small_domains="dslr")
    options = {"per_class": "auto", "small_domains": "dslr+webcam"}
    quiet_options = frozenset({"small_domains"})

    def make_split(self, dataset, seed, source=None, target=None):
        rng = np.random.default_rng(seed)
        train, notes = _source_sample(dataset, source, self.params["per_class"], rng, self.name,
                                      self.params["small_domains"])
        return Split(train=train, test=dataset.in_group(target), notes=notes)


@register_protocol
class SourcePlusTarget(Protocol):
    """Saenko 2010 / DeCAF: the source sample plus 3 labelled target images/class; test: the other target images."""

    name = "source+target"
    needs_domains = True
    gives_target_labels = True
    default_trials = 5
    options = {"source_per_class": "auto", "target_per_class": 3, "small_domains": "dslr+webcam"}
    quiet_options = frozenset({"small_domains"})

    def make_split(self, dataset, seed, source=None, target=None):
        rng = np.random.default_rng(seed)
        train, notes = _source_sample(dataset, source, self.params["source_per_class"], rng, self.name,
                                      self.params["small_domains"])
        n_t = _count(self.params["target_per_class"], "target_per_class", self.name)
        target_train, test, t_notes = sample_per_class(dataset.in_group(target), n_t, rng, f"target {target}")
        return Split(train=train, test=test, target_train=target_train,
                     notes=notes + t_notes + [f"target: {n_t} labelled images per class from {target}"])
