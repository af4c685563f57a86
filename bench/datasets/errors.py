"""Errors of the dataset layer: a bad ``datasets.yaml``, an unknown name, data that is not there."""

from __future__ import annotations

from quant.errors import TernbenchError


class RegistryError(TernbenchError, ValueError):
    """``datasets.yaml`` is malformed; the message names the file, the line and the entry."""


class UnknownDatasetError(TernbenchError, ValueError):
    """A dataset or suite name that the registry does not know (message lists the valid ones)."""


class DatasetUnavailable(TernbenchError):
    """The data of a known dataset is neither local nor reachable; the message says where we looked
    and how to provide it. The sweep records this for the cell and goes on."""


class DatasetLayoutError(DatasetUnavailable):
    """A local dataset folder exists but is not clip_benchmark's webdataset layout (names the file)."""
