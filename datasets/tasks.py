"""Task names to tasks: a dataset, a protocol and (for domain shifts) a source and target.

Task names: the dataset folder name (``caltech101_mini``), or ``DATASET:SOURCE->TARGET`` for
a domain shift (``office_caltech10:amazon->webcam``). A folder with train/test subfolders uses
its given split; one with domain subfolders is a domain-shift dataset and needs SOURCE->TARGET.

An optional ``#LABEL`` suffix (``office_caltech10:amazon->webcam#st``) only names the task: it is
ignored when the dataset is found, so one dataset or shift can appear twice in a suite with two
protocols and still get its own rows and report lines.

Datasets are read by :func:`featbench.datasets.readers.read_any` (MANIFEST.tsv copies, ImageFolder
trees and the official layouts of CUB-200-2011, MIT Indoor-67, Caltech-101, Flowers-102,
Oxford-IIIT Pets and SUN-397); the names in ``readers.TORCHVISION`` (``tv_caltech101``, ...)
go through torchvision's dataset classes under the first data root.

The protocol is the suite's (``protocol = "..."``); without one, :func:`default_protocol`
picks the literature's protocol from the dataset name.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from featbench.errors import FeatbenchError

from .builtin import BUILTIN
from .folder import Dataset, find_dataset
from .protocols import Protocol, Split, make_protocol
from .readers import TORCHVISION, detect_layout, load_torchvision, read_any


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
    """``DATASET[:SOURCE->TARGET][#LABEL]`` -> (dataset, source, target); the label is dropped."""
    name = name.partition("#")[0].strip()
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


#: dataset-name prefix -> protocol used when the suite names none (first match wins)
DEFAULT_PROTOCOLS: tuple[tuple[str, str], ...] = (
    ("caltech101", "caltech101-30"), ("tv_caltech101", "caltech101-30"), ("101_objectcategories", "caltech101-30"),
    ("scene15", "scene15-100"), ("15-scene", "scene15-100"), ("15scene", "scene15-100"),
    ("sun397", "sun397-partitions"), ("tv_sun397", "sun397-partitions"),
)


def default_protocol(dataset: Dataset, source: str | None) -> str:
    """The literature's protocol for a dataset, by name; ``given`` for the shared ``*_mini`` subsets.

    * a domain shift: ``source-only-full``
    * ``*_mini`` with train/test folders: ``given`` (the seeded subsets are too small for 30/class)
    * ``caltech101*``: ``caltech101-30``; ``scene15*``: ``scene15-100``; ``sun397*``: ``sun397-partitions``
      (a SUN-397 layout is recognised whatever the folder is called)
    * anything with train/test groups (CUB, Indoor-67, Flowers, Pets, ...): ``given``
    * else ``per-class`` (30 train / up to 50 test per class)
    """
    if source is not None:
        return "source-only-full"
    low = dataset.name.lower()
    has_given = {"train", "test"} <= set(dataset.groups)
    if low.endswith("_mini") and has_given:
        return "given"
    if getattr(dataset, "layout", "") == "sun397":
        return "sun397-partitions"
    for prefix, proto in DEFAULT_PROTOCOLS:
        if low.startswith(prefix):
            return proto
    if has_given:
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
    if source is not None and source == target:
        raise FeatbenchError(f"task '{name}': source and target are the same domain")
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
