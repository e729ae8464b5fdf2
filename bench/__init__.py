"""featbench: ImageNet CNN layer features against classical descriptors, one linear classifier on top.

The package maps the repository's folders into one namespace:
``featbench`` (the harness, ``bench/``), ``featbench.features`` (extractors),
``featbench.datasets`` (readers and task protocols), ``featbench.reports``.
"""
from importlib import metadata as _metadata

try:
    __version__ = _metadata.version("featbench")
except _metadata.PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: Version of the result-record schema (results/*.jsonl, results.csv). Additive changes only.
RESULT_SCHEMA_VERSION = 1
