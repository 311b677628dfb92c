"""10,000 real MNIST digits stored as one ``.npz`` file (no official split)."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from flsec_flower.data.dataset import (
    Dataset,
    corrupt_file_error,
    images_to_tensor,
    labels_to_tensor,
    missing_files_error,
    stratified_split,
)

TEST_FRACTION = 0.2


def mnist10k_path(root: Path) -> Path:
    """Return the expected location ``<root>/mnist10k/mnist10k.npz``.

    Parameters
    ----------
    root : Path
        The data root.

    Returns
    -------
    Path
        Path of the ``.npz`` file.
    """
    return root / "mnist10k" / "mnist10k.npz"


def load_mnist10k(root: Path, seed: int = 0) -> Dataset:
    """Load ``mnist10k.npz`` and split it 80/20, stratified by class.

    Parameters
    ----------
    root : Path
        The data root holding ``mnist10k/mnist10k.npz`` with arrays ``images``
        (uint8 ``(10000, 28, 28)``) and ``labels``.
    seed : int
        Seed of the train/test split.

    Returns
    -------
    Dataset
        Images ``(N, 1, 28, 28)`` in ``[0, 1]``, 10 classes; 8,000 train and
        2,000 test samples.

    Raises
    ------
    FileNotFoundError
        If the ``.npz`` file is absent (there is no download for it).
    DataError
        If it cannot be read (truncated, corrupt, arrays missing).
    """
    path = mnist10k_path(root)
    if not path.is_file():
        raise missing_files_error("mnist10k", [path], downloadable=False)
    try:
        with np.load(path) as archive:
            images = archive["images"].reshape(-1, 1, 28, 28)
            labels = archive["labels"].astype(np.int64)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as err:
        raise corrupt_file_error(path, err) from err
    x_train, x_test, y_train, y_test = stratified_split(images, labels, TEST_FRACTION, seed)
    return Dataset(
        name="mnist10k",
        x_train=images_to_tensor(x_train, 255.0),
        y_train=labels_to_tensor(y_train),
        x_test=images_to_tensor(x_test, 255.0),
        y_test=labels_to_tensor(y_test),
        num_classes=10,
    )
