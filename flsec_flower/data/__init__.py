"""Datasets as plain CPU tensors, and their federated partitions.

>>> from flsec_flower.data import load_dataset, partition_indices
>>> ds = load_dataset("digits", seed=0)
>>> parts = partition_indices(ds.y_train.numpy(), 10, "dirichlet", alpha=0.5, seed=0)
>>> sum(len(p) for p in parts) == len(ds.y_train)
True
"""

from flsec_flower.data.dataset import Dataset
from flsec_flower.data.layout import ATTACK_DATA_KINDS, client_layout
from flsec_flower.data.partition import PARTITION_KINDS, partition_indices
from flsec_flower.data.registry import DATASETS, load_dataset

__all__ = [
    "ATTACK_DATA_KINDS",
    "DATASETS",
    "PARTITION_KINDS",
    "Dataset",
    "client_layout",
    "load_dataset",
    "partition_indices",
]
