"""The dataset registry: ``load_dataset(name, ...)`` with a per-process cache."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from flsec_flower.cache import BoundedCache
from flsec_flower.data.adult import load_adult
from flsec_flower.data.cifar import load_cifar
from flsec_flower.data.dataset import Dataset, resolve_data_dir
from flsec_flower.data.digits import load_digits
from flsec_flower.data.idx import load_mnist_family
from flsec_flower.data.mnist10k import load_mnist10k
from flsec_flower.data.names import DATASETS
from flsec_flower.data.synthetic import make_blobs

Loader = Callable[[Path, bool, int], Dataset]
"""``(data root, download, seed) -> Dataset``."""

_LOADERS: dict[str, Loader] = {
    "digits": lambda root, download, seed: load_digits(seed),
    "fashion_mnist": lambda root, download, seed: load_mnist_family(
        "fashion_mnist", root, download
    ),
    "mnist": lambda root, download, seed: load_mnist_family("mnist", root, download),
    "mnist10k": lambda root, download, seed: load_mnist10k(root, seed),
    "cifar10": lambda root, download, seed: load_cifar("cifar10", root, download),
    "cifar100": lambda root, download, seed: load_cifar("cifar100", root, download),
    "adult": lambda root, download, seed: load_adult(root, download),
    "synthetic": lambda root, download, seed: make_blobs(seed),
}


_FILE_FREE = frozenset({"digits", "synthetic"})
"""Datasets that need no data root."""

_SEEDED = frozenset({"digits", "mnist10k", "synthetic"})
"""Datasets whose content (generation or train/test split) depends on the seed."""

_CACHE: BoundedCache[tuple[str, str, int], Dataset] = BoundedCache("datasets", 4)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    download: bool = False,
    seed: int = 0,
) -> Dataset:
    """Load a dataset by name, once per process.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    data_dir : str or PathLike or None
        Data root in torchvision's layout (``<root>/FashionMNIST/raw``,
        ``<root>/cifar-10-batches-py``, ``<root>/adult``, ``<root>/mnist10k``).
        ``None`` means ``$FLSEC_DATA_DIR`` if set, else ``./data``. Ignored
        by ``digits`` and ``synthetic``.
    download : bool
        Download missing files (MNIST, Fashion-MNIST and CIFAR through
        torchvision, Adult from UCI). ``mnist10k`` has no download.
    seed : int
        Seed of the train/test split (``digits``, ``mnist10k``) or of the
        generator (``synthetic``); the other datasets have a fixed split.

    Returns
    -------
    Dataset
        CPU tensors. Repeated calls with arguments that give the same data
        return the same object, so do not modify its tensors in place.

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset.
    FileNotFoundError
        If the files are missing and ``download`` is false; the message names
        the expected paths.

    Examples
    --------
    >>> ds = load_dataset("digits")
    >>> ds.input_shape, ds.num_classes
    ((1, 8, 8), 10)
    >>> load_dataset("digits") is ds
    True
    """
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
    root = resolve_data_dir(data_dir)
    key = (
        name,
        "" if name in _FILE_FREE else str(root),
        seed if name in _SEEDED else 0,
    )
    return _CACHE.get_or_build(key, lambda: _LOADERS[name](root, download, seed))
