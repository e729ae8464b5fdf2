"""Feature extractors. Importing this package registers the built-in ones.

``featbench.features.create(spec)`` builds an extractor from a spec string; ``available()``
lists them. Other packages add extractors through the ``featbench.extractors`` entry-point group.
"""
from .base import Extractor, ExtractorConfig, available, create, parse_spec, register
from . import hog  # noqa: F401  (registration)
from . import cnn  # noqa: F401
from . import classical  # noqa: F401
from . import precomputed  # noqa: F401

__all__ = ["Extractor", "ExtractorConfig", "available", "create", "parse_spec", "register"]
