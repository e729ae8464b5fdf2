"""Suites: TOML files naming tasks, extractors, classifiers, trials and a seed.

A suite file looks like::

    name = "quick-shared"
    description = "The shared mini datasets and two Office-Caltech-10 shifts"
    seed = 0
    trials = 1                       # default per task; fixed splits always run once
    extractors = ["hog", "cnn:tf_efficientnet_lite0"]
    classifiers = ["logreg"]
    executor = "ray"                 # optional: where extraction runs, local (default) or ray;
    ray_address = "10.0.0.1:6379"    #   the command line's --executor/--ray-address/--ray-workers
    ray_workers = 8                  #   win over these

    [[tasks]]
    name = "caltech101_mini"          # or a plain list: tasks = ["caltech101_mini", ...]

    [[tasks]]
    name = "office_caltech10:amazon->webcam"
    protocol = "source-only-full"     # optional; datasets/protocols.py lists them
    protocol_options = {}             # optional
    methods = ["none", "coral"]       # domain-adaptation methods (bench/adaptation.py)
    trials = 5
    family = "domain"                 # optional; guessed from the dataset name
    train_per_class = [1, 5, 10]      # optional: a learning curve, one task per size (TASK#n=5)

Suites shipped with featbench live in ``suites/`` and can be named without the path
(``featbench run quick-shared``); ``featbench list suites`` shows them.
"""
from __future__ import annotations

import dataclasses
import sys
from importlib import resources
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from featbench.datasets.learning_curve import curve_sizes
from featbench.errors import FeatbenchError

DEFAULT_SUITE = "default"
SUITE_KEYS = {"name", "description", "seed", "trials", "extractors", "classifiers", "tasks", "data_root",
              "executor", "ray_address", "ray_workers"}
TASK_KEYS = {"name", "protocol", "protocol_options", "methods", "trials", "family", "train_per_class"}


@dataclasses.dataclass
class TaskSpec:
    name: str
    protocol: str | None = None
    protocol_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    methods: list[str] = dataclasses.field(default_factory=lambda: ["none"])
    trials: int | None = None
    family: str | None = None
    #: a learning curve: one task per size, training images cut to n per class
    #: (:mod:`featbench.datasets.learning_curve`)
    train_per_class: list[int] | None = None


@dataclasses.dataclass
class Suite:
    name: str
    tasks: list[TaskSpec]
    extractors: list[str]
    classifiers: list[str] = dataclasses.field(default_factory=lambda: ["logreg"])
    trials: int | None = None
    seed: int = 0
    description: str = ""
    data_root: str | None = None
    path: str | None = None
    executor: str | None = None
    ray_address: str | None = None
    ray_workers: int | None = None


def shipped_suites() -> dict[str, Path]:
    folder = resources.files("featbench.suites")
    return {Path(p.name).stem: Path(str(p)) for p in folder.iterdir() if p.name.endswith(".toml")}


def _check_list(value: Any, what: str, where: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise FeatbenchError(f"{where}: '{what}' must be a list of non-empty strings")
    return value


def parse_suite(data: dict[str, Any], where: str) -> Suite:
    unknown = sorted(set(data) - SUITE_KEYS)
    if unknown:
        raise FeatbenchError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(SUITE_KEYS))}")
    for key in ("tasks", "extractors"):
        if key not in data:
            raise FeatbenchError(f"{where}: missing '{key}'")
    tasks = []
    for i, item in enumerate(data["tasks"] if isinstance(data["tasks"], list) else [data["tasks"]]):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or "name" not in item:
            raise FeatbenchError(f"{where}: task #{i + 1} needs a 'name'")
        bad = sorted(set(item) - TASK_KEYS)
        if bad:
            raise FeatbenchError(f"{where}: task '{item['name']}': unknown key(s) {', '.join(bad)}; "
                                 f"known: {', '.join(sorted(TASK_KEYS))}")
        trials = item.get("trials")
        if trials is not None and (not isinstance(trials, int) or trials < 1):
            raise FeatbenchError(f"{where}: task '{item['name']}': trials must be a positive integer")
        tasks.append(TaskSpec(name=item["name"], protocol=item.get("protocol"),
                              protocol_options=dict(item.get("protocol_options", {})),
                              methods=_check_list(item.get("methods", ["none"]), "methods", where),
                              trials=trials, family=item.get("family"),
                              train_per_class=(curve_sizes(item["train_per_class"], f"{where}: task '{item['name']}'")
                                               if "train_per_class" in item else None)))
    seed, trials = data.get("seed", 0), data.get("trials")
    if not isinstance(seed, int):
        raise FeatbenchError(f"{where}: 'seed' must be an integer")
    if trials is not None and (not isinstance(trials, int) or trials < 1):
        raise FeatbenchError(f"{where}: 'trials' must be a positive integer")
    executor, address, workers = data.get("executor"), data.get("ray_address"), data.get("ray_workers")
    if executor is not None and executor not in ("local", "ray"):
        raise FeatbenchError(f"{where}: 'executor' must be \"local\" or \"ray\"")
    if address is not None and not isinstance(address, str):
        raise FeatbenchError(f"{where}: 'ray_address' must be a string (HOST:PORT or auto)")
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise FeatbenchError(f"{where}: 'ray_workers' must be a positive integer")
    return Suite(name=str(data.get("name", "suite")), tasks=tasks, executor=executor, ray_address=address,
                 ray_workers=workers,
                 extractors=_check_list(data["extractors"], "extractors", where),
                 classifiers=_check_list(data.get("classifiers", ["logreg"]), "classifiers", where),
                 trials=trials, seed=seed, description=str(data.get("description", "")),
                 data_root=data.get("data_root"))


def load_suite(name_or_path: str | None) -> Suite:
    """A suite from a TOML path, or the name of a shipped suite (default: the embedded one)."""
    name_or_path = name_or_path or DEFAULT_SUITE
    path = Path(name_or_path)
    if not path.is_file():
        shipped = shipped_suites()
        if name_or_path in shipped:
            path = shipped[name_or_path]
        else:
            raise FeatbenchError(f"suite not found: {name_or_path} (a TOML file, or one of: {', '.join(sorted(shipped))})")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise FeatbenchError(f"{path}: malformed TOML ({exc})") from exc
    except OSError as exc:
        raise FeatbenchError(f"{path}: cannot read ({exc.strerror})") from exc
    suite = parse_suite(data, str(path))
    suite.path = str(path)
    return suite
