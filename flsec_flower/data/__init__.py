"""Datasets as plain CPU tensors, and their federated partitions.

>>> from flsec_flower.data import load_dataset, partition_indices
>>> ds = load_dataset("digits", seed=0)
>>> parts = partition_indices(ds.y_train.numpy(), 10, "dirichlet", alpha=0.5, seed=0)
>>> sum(len(p) for p in parts) == len(ds.y_train)
True

Attributes are imported on first use (PEP 562), so ``flsec_flower.data.names``
(and the config validation that uses it) does not import torch.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the real names for type checkers; at run time they load on first use
    from flsec_flower.data.dataset import Dataset
    from flsec_flower.data.layout import client_layout
    from flsec_flower.data.names import ATTACK_DATA_KINDS, DATASETS, PARTITION_KINDS
    from flsec_flower.data.partition import partition_indices
    from flsec_flower.data.registry import load_dataset

_EXPORTS = {
    "ATTACK_DATA_KINDS": "flsec_flower.data.names",
    "DATASETS": "flsec_flower.data.names",
    "PARTITION_KINDS": "flsec_flower.data.names",
    "Dataset": "flsec_flower.data.dataset",
    "client_layout": "flsec_flower.data.layout",
    "load_dataset": "flsec_flower.data.registry",
    "partition_indices": "flsec_flower.data.partition",
}

__all__ = [
    "ATTACK_DATA_KINDS",
    "DATASETS",
    "PARTITION_KINDS",
    "Dataset",
    "client_layout",
    "load_dataset",
    "partition_indices",
]


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
