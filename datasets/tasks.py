"""Task names to tasks: a dataset, a protocol and (for domain shifts) a source and target.

Task names: the dataset folder name (``caltech101_mini``), or ``DATASET:SOURCE->TARGET`` for
a domain shift (``office_caltech10:amazon->webcam``). A folder with train/test subfolders uses
its given split; one with domain subfolders is a domain-shift dataset and needs SOURCE->TARGET.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from featbench.errors import FeatbenchError

from .builtin import BUILTIN
from .folder import Dataset, find_dataset, read_dataset
from .protocols import Protocol, Split, make_protocol


@dataclasses.dataclass
class Task:
    name: str
    dataset: Dataset
    protocol: Protocol
    trials: int
    family: str
    source: str | None = None
    target: str | None = None

    def split(self, trial: int, seed: int) -> Split:
        """The split of trial ``trial`` (0-based); its seed is ``seed + trial``."""
        return self.protocol.split(self.dataset, seed + trial, source=self.source, target=self.target)


def parse_task_name(name: str) -> tuple[str, str | None, str | None]:
    dataset, sep, shift = name.partition(":")
    if not dataset:
        raise FeatbenchError(f"task '{name}': empty dataset name")
    if not sep:
        return dataset, None, None
    source, arrow, target = shift.partition("->")
    if not arrow or not source or not target:
        raise FeatbenchError(f"task '{name}': a domain shift is written DATASET:SOURCE->TARGET")
    return dataset, source, target


_DATASET_CACHE: dict[tuple[str, bool], Dataset] = {}


def load_dataset(name: str, data_roots: list[str], verify: bool = False) -> Dataset:
    if name in BUILTIN:
        return BUILTIN[name]()
    path = find_dataset(name, data_roots)
    key = (str(path.resolve()), verify)
    if key not in _DATASET_CACHE:
        _DATASET_CACHE[key] = read_dataset(path, name=name, verify=verify)
    return _DATASET_CACHE[key]


def default_protocol(dataset: Dataset, source: str | None) -> str:
    if source is not None:
        return "source-only-full"
    if {"train", "test"} <= set(dataset.groups):
        return "given"
    return "per-class"


def resolve_task(name: str, data_roots: list[str], protocol: str | None = None,
                 protocol_options: dict[str, Any] | None = None, trials: int | None = None,
                 family: str | None = None, verify: bool = False) -> Task:
    dataset_name, source, target = parse_task_name(name)
    dataset = load_dataset(dataset_name, data_roots, verify=verify)
    if source is None and dataset.is_domain_dataset:
        raise FeatbenchError(
            f"task '{name}': '{dataset_name}' is a domain-shift dataset (domains: {', '.join(dataset.groups)}); "
            f"name a shift as {dataset_name}:SOURCE->TARGET")
    for domain in (source, target):
        if domain is not None and domain not in dataset.groups:
            raise FeatbenchError(f"task '{name}': no domain '{domain}' in '{dataset_name}' "
                                 f"(domains: {', '.join(dataset.groups)})")
    proto = make_protocol(protocol or default_protocol(dataset, source), **(protocol_options or {}))
    if proto.needs_domains and source is None:
        raise FeatbenchError(f"task '{name}': protocol '{proto.name}' needs DATASET:SOURCE->TARGET")
    n_trials = 1 if proto.deterministic else (trials or proto.default_trials)
    return Task(name=name, dataset=dataset, protocol=proto, trials=n_trials,
                family=family or ("domain" if source else dataset.family), source=source, target=target)


def available_tasks(data_roots: list[str]):
    """(task name, description) for the built-in datasets and every dataset under the data roots."""
    from pathlib import Path

    from .folder import read_dataset

    for name in BUILTIN:
        yield name, "built-in (scikit-image photos)"
    seen = set()
    for root in data_roots:
        root_path = Path(root).expanduser()
        if not root_path.is_dir():
            continue
        for folder in sorted(p for p in root_path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if folder.name in seen:
                continue
            seen.add(folder.name)
            try:
                ds = read_dataset(folder)
            except FeatbenchError as exc:
                yield folder.name, f"unreadable: {exc}"
                continue
            where = f"{len(ds.records)} images, {len(ds.classes)} classes ({root})"
            if ds.is_domain_dataset:
                for s in ds.groups:
                    for t in ds.groups:
                        if s != t:
                            yield f"{ds.name}:{s}->{t}", where
            else:
                yield ds.name, where
