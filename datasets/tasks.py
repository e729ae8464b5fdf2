"""Task names to tasks: a dataset, a protocol and (for domain shifts) a source and target.

Task names: the dataset folder name (``caltech101_mini``), or ``DATASET:SOURCE->TARGET`` for
a domain shift (``office_caltech10:amazon->webcam``). A folder with train/test subfolders uses
its given split; one with domain subfolders is a domain-shift dataset and needs SOURCE->TARGET.

An optional ``#LABEL`` suffix (``office_caltech10:amazon->webcam#st``) only names the task: it is
ignored when the dataset is found, so one dataset or shift can appear twice in a suite with two
protocols and still get its own rows and report lines.

Datasets are read by :func:`featbench.datasets.readers.read_any` (MANIFEST.tsv copies, ImageFolder
trees and the official layouts of CUB-200-2011, MIT Indoor-67, Caltech-101, Flowers-102,
Oxford-IIIT Pets and SUN-397); the names in ``torchvision_sets.TORCHVISION`` (``tv_caltech101``, ...)
go through torchvision's dataset classes under the first data root.

The protocol is the suite's (``protocol = "..."``); without one, :func:`default_protocol` picks
the dataset's own train/test split when it has one, else the literature's protocol for it
(its :class:`~featbench.datasets.info.DatasetInfo`).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from featbench.errors import FeatbenchError

from .builtin import BUILTIN
from .folder import Dataset, find_dataset
from .info import parse_task_name  # noqa: F401  (public here too)
from .protocols import Protocol, Split, make_protocol
from .readers import detect_layout, read_any
from .torchvision_sets import TORCHVISION, load_torchvision


@dataclasses.dataclass
class Task:
    name: str
    dataset: Dataset
    protocol: Protocol
    trials: int
    family: str
    source: str | None = None
    target: str | None = None
    #: why this protocol: named by the suite, or which default rule chose it
    protocol_source: str = ""

    def split(self, trial: int, seed: int) -> Split:
        """The split of trial ``trial`` (0-based); its seed is ``seed + trial``."""
        return self.protocol.split(self.dataset, seed + trial, source=self.source, target=self.target)


_DATASET_CACHE: dict[tuple[str, bool], Dataset] = {}


def load_dataset(name: str, data_roots: list[str], verify: bool = False) -> Dataset:
    if name in BUILTIN:
        return BUILTIN[name]()
    if name in TORCHVISION:
        root = torchvision_root(name, data_roots)
        key = (f"torchvision:{root}:{name}", verify)
        if key not in _DATASET_CACHE:
            _DATASET_CACHE[key] = load_torchvision(name, root)
        return _DATASET_CACHE[key]
    path = find_dataset(name, data_roots)
    key = (str(path.resolve()), verify)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE[key] = read_any(path, name=name, verify=verify)
    return _DATASET_CACHE[key]


def torchvision_root(name: str, data_roots: list[str]) -> Path:
    """The first data root holding torchvision's folder for ``name``, else the first data root."""
    roots = [Path(r).expanduser() for r in data_roots]
    if not roots:
        raise FeatbenchError(f"dataset '{name}': no data root to find or download it in (use --data-root DIR)")
    return next((r for r in roots if TORCHVISION[name].present(r)), roots[0])


def default_protocol(dataset: Dataset, source: str | None) -> tuple[str, str]:
    """The protocol used when the suite names none, and why (recorded in run.json).

    * a domain shift: ``source-only-full``
    * a dataset with its own train/test split: ``given``, whatever the folder is called (a folder
      named ``sun397_...`` holding its own split is evaluated on that split)
    * else the dataset's usual protocol (:class:`~featbench.datasets.info.DatasetInfo`:
      ``caltech101-30``, ``scene15-100``, ``sun397-partitions``)
    * else ``per-class`` (30 train / up to 50 test per class)
    """
    if source is not None:
        return "source-only-full", "default for a domain shift"
    if {"train", "test"} <= set(dataset.groups):
        return "given", "default: the dataset's own train/test split"
    info = dataset.info
    if info is not None and info.default_protocol:
        where = f"the {info.layout} layout" if info.layout in ("sun397", "caltech101-tree") else f"'{dataset.name}'"
        return info.default_protocol, f"default for {where} (no train/test split of its own)"
    return "per-class", "default: no train/test split of its own"


def resolve_task(name: str, data_roots: list[str], protocol: str | None = None,
                 protocol_options: dict[str, Any] | None = None, trials: int | None = None,
                 family: str | None = None, verify: bool = False) -> Task:
    dataset_name, source, target = parse_task_name(name)
    dataset = load_dataset(dataset_name, data_roots, verify=verify)
    if source is None and dataset.is_domain_dataset:
        raise FeatbenchError(
            f"task '{name}': '{dataset_name}' is a domain-shift dataset (domains: {', '.join(dataset.groups)}); "
            f"name a shift as {dataset_name}:SOURCE->TARGET")
    if source is not None and source == target:
        raise FeatbenchError(f"task '{name}': source and target are the same domain")
    for domain in (source, target):
        if domain is not None and domain not in dataset.groups:
            raise FeatbenchError(f"task '{name}': no domain '{domain}' in '{dataset_name}' "
                                 f"(domains: {', '.join(dataset.groups)})")
    chosen, why = (protocol, "named by the suite") if protocol else default_protocol(dataset, source)
    proto = make_protocol(chosen, **(protocol_options or {}))
    if proto.needs_domains and source is None:
        raise FeatbenchError(f"task '{name}': protocol '{proto.name}' needs DATASET:SOURCE->TARGET")
    n_trials = 1 if proto.deterministic else (trials or proto.default_trials)
    return Task(name=name, dataset=dataset, protocol=proto, trials=n_trials,
                family=family or ("domain" if source else dataset.family), source=source, target=target,
                protocol_source=why)


def available_tasks(data_roots: list[str]):
    """(task name, description) for the built-in datasets and every dataset under the data roots.

    MANIFEST.tsv copies and ImageFolder trees are read (as before); the official layouts
    (CUB, Indoor-67, Caltech-101 tree, Flowers, Pets, SUN-397) are only recognised by their
    file names, without hashing every image.
    """
    from .folder import read_dataset

    for name in BUILTIN:
        yield name, "built-in (scikit-image photos)"
    roots = [Path(r).expanduser() for r in data_roots]
    seen = set()
    for root_path in roots:
        if not root_path.is_dir():
            continue
        for folder in sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name in seen:
                continue
            seen.add(folder.name)
            layout = detect_layout(folder)
            if layout not in ("manifest", "imagefolder", "feature-files"):
                yield folder.name, f"{layout} layout ({root_path})"
                continue
            try:
                ds = read_any(folder) if layout == "feature-files" else read_dataset(folder)
            except FeatbenchError as exc:
                yield folder.name, f"unreadable: {exc}"
                continue
            where = f"{len(ds.records)} images, {len(ds.classes)} classes ({root_path})"
            if ds.is_domain_dataset:
                for s in ds.groups:
                    for t in ds.groups:
                        if s != t:
                            yield f"{ds.name}:{s}->{t}", where
            else:
                yield ds.name, where
    for name, spec in TORCHVISION.items():  # listed once downloaded (FEATBENCH_DOWNLOAD=1 fetches them)
        found = next((r for r in roots if spec.present(r)), None)
        if found:
            yield name, f"torchvision.datasets.{spec.cls} ({found / spec.folder})"
