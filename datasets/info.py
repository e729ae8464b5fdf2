"""What featbench knows about a dataset, written once: :class:`DatasetInfo`.

Each reader attaches a ``DatasetInfo`` to the dataset it reads (the official layouts register
theirs with the reader, :func:`featbench.datasets.readers.register_layout`); datasets read from a
MANIFEST.tsv copy or a plain ImageFolder tree are looked up by folder name in :data:`KNOWN`. The
runner records it in run.json and in every result record, and the reports read it from there
(records from before it existed are looked up here, by the same table).

This module imports nothing heavy: the reports use it too.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from featbench.errors import FeatbenchError

FAMILIES = ("object", "fine-grained", "scene", "domain")
METRICS = ("top1", "mean_class_acc")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Dataset facts the runner and the reports act on."""

    #: task family: object, fine-grained, scene or domain
    family: str = "object"
    #: protocol used when the suite names none and the dataset has no train/test split of its own
    #: ('' = ``per-class``; a domain shift uses ``source-only-full``)
    default_protocol: str = ""
    #: the metric the literature reports for it (the report's headline): top1 or mean_class_acc
    headline_metric: str = "top1"
    #: the reader that read it (``featbench list layouts``); '' when not read from a folder
    layout: str = ""
    #: which published anchors apply (reports/anchors.py), '' for none
    anchors_key: str = ""

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise FeatbenchError(f"dataset info: family '{self.family}' is not one of {', '.join(FAMILIES)}")
        if self.headline_metric not in METRICS:
            raise FeatbenchError(f"dataset info: metric '{self.headline_metric}' is not one of {', '.join(METRICS)}")

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Known:
    """A dataset recognised by its folder name (case-insensitive regex searched from the start)."""

    pattern: str
    info: DatasetInfo
    #: why its headline metric is what it is (shown in the report), '' for top-1
    metric_reason: str = ""


_CALTECH_WHY = ("Caltech-101/256 results are reported as mean per-class accuracy "
                "(Fei-Fei et al. 2004; Griffin et al. 2007)")
_SCENE_WHY = "15-Scene results are reported as the mean of per-class recognition rates (Lazebnik et al. 2006)"
_BALANCED_WHY = "SUN-397 and MIT-67 report average per-class accuracy (balanced test sets: equal to top-1)"

#: folder name -> facts; the first match wins, anything else is an ``object`` dataset with top-1.
KNOWN: list[Known] = [
    Known(r"^(tv_)?(caltech[-_]?101|101_objectcategories)",
          DatasetInfo("object", "caltech101-30", "mean_class_acc", anchors_key="caltech101"), _CALTECH_WHY),
    Known(r"^caltech[-_]?256", DatasetInfo("object", "", "mean_class_acc"), _CALTECH_WHY),
    Known(r"^(scene[-_]?15|15[-_]?scene)", DatasetInfo("scene", "scene15-100", "mean_class_acc", anchors_key="scene15"),
          _SCENE_WHY),
    Known(r"^fifteen[-_]?scene", DatasetInfo("object", "", "mean_class_acc"), _SCENE_WHY),
    Known(r"^(tv_)?sun[-_]?397", DatasetInfo("scene", "sun397-partitions", "mean_class_acc", anchors_key="sun397"),
          _BALANCED_WHY),
    Known(r"^(mit[-_]?67|indoor[-_]?67)", DatasetInfo("scene", "", "mean_class_acc", anchors_key="indoor67"),
          _BALANCED_WHY),
    # published feature files (datasets/published_sources.toml): set beside the tables they reproduce
    # (reports/reproductions.py), not beside anchors
    Known(r"^office[-_]?caltech10_(surf|googlenet1024)$", DatasetInfo("domain")),
    Known(r"^office[-_]?caltech", DatasetInfo("domain", anchors_key="office-caltech10")),
    Known(r"^office", DatasetInfo("domain", anchors_key="office31")),
    Known(r"^cub", DatasetInfo("fine-grained", anchors_key="cub200")),
    Known(r"^(flowers|pets)", DatasetInfo("fine-grained")),
    Known(r"^(scene|sun|indoor|mit67)", DatasetInfo("scene")),
]


def dataset_info(name: str, layout: str = "") -> DatasetInfo:
    """The facts for a dataset read from a generic folder (MANIFEST.tsv, ImageFolder), by its name."""
    for known in KNOWN:
        if re.search(known.pattern, str(name), re.IGNORECASE):
            return dataclasses.replace(known.info, layout=layout)
    return DatasetInfo(layout=layout)


def metric_reasons() -> list[str]:
    """Why some datasets headline mean per-class accuracy (one line per reason, for the report)."""
    return list(dict.fromkeys(k.metric_reason for k in KNOWN if k.metric_reason))


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
