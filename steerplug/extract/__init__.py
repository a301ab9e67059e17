"""Vector extraction: contrastive examples → per-layer steering vectors → a recipe bundle.

See :func:`extract` and ``steerplug extract --help``; the methods are described in
:mod:`steerplug.extract.methods`.
"""

from steerplug.extract.api import ARTIFACT, Extraction, extract
from steerplug.extract.data import ContrastSet, read_examples
from steerplug.extract.methods import METHODS
from steerplug.extract.pooling import POOLINGS, pool

__all__ = ["ARTIFACT", "METHODS", "POOLINGS", "ContrastSet", "Extraction", "extract", "pool", "read_examples"]
