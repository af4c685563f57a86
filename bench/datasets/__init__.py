"""Datasets of the bench: the registry read from ``datasets.yaml`` (`registry`), loading through
clip_benchmark's builder from a local folder or Hugging Face (`loading`), and the embedded,
generated mini suite (`mini`). Importing this package does not import clip_benchmark, webdataset
or scikit-learn (those load when data is built); torch comes in through ``quant.errors``.
"""

from __future__ import annotations

from bench.datasets.errors import DatasetLayoutError, DatasetUnavailable, RegistryError, UnknownDatasetError
from bench.datasets.registry import DatasetEntry, Registry, load_registry, resolve

__all__ = [
    "DatasetEntry",
    "DatasetLayoutError",
    "DatasetUnavailable",
    "Registry",
    "RegistryError",
    "UnknownDatasetError",
    "load_registry",
    "resolve",
]
