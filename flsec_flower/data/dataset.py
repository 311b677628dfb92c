"""The in-memory dataset type shared by every loader, and small helpers for loaders."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

DATA_DIR_ENV = "FLSEC_DATA_DIR"
"""Environment variable read when no ``data_dir`` is given."""


@dataclass(frozen=True, eq=False, repr=False)
class Dataset:
    """A train/test dataset held as plain CPU tensors.

    Loaders return one instance per process and the cache hands the same
    instance to every caller, so callers must not modify the tensors in place
    (clone first, e.g. to poison a client's view).

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"digits"``.
    x_train, x_test : torch.Tensor
        float32 inputs. Images are ``(N, C, H, W)`` scaled to ``[0, 1]`` (not
        mean/std normalised, so attacks can stamp pixels at 1.0); tabular data
        is ``(N, F)``.
    y_train, y_test : torch.Tensor
        int64 class labels ``(N,)`` in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes.
    groups_train, groups_test : dict[str, torch.Tensor]
        Sensitive attribute name -> int64 ``(N,)`` group codes, e.g.
        ``{"sex": ...}`` (0 female, 1 male) for Adult; empty otherwise.

    Examples
    --------
    >>> ds = Dataset("toy", torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]),
    ...              torch.zeros(2, 2), torch.tensor([0, 1]), num_classes=2)
    >>> ds.input_shape
    (2,)
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    groups_train: dict[str, torch.Tensor] = field(default_factory=dict)
    groups_test: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split, x, y, groups in (
            ("train", self.x_train, self.y_train, self.groups_train),
            ("test", self.x_test, self.y_test, self.groups_test),
        ):
            if x.dtype != torch.float32 or y.dtype != torch.int64:
                raise TypeError(
                    f"{self.name}: x_{split} must be float32 and y_{split} int64, "
                    f"got {x.dtype} and {y.dtype}"
                )
            if y.ndim != 1 or x.shape[0] != y.shape[0]:
                raise ValueError(
                    f"{self.name}: x_{split} has {x.shape[0]} rows but y_{split} has "
                    f"shape {tuple(y.shape)}"
                )
            for attr, codes in groups.items():
                if codes.dtype != torch.int64 or codes.shape != y.shape:
                    raise ValueError(
                        f"{self.name}: groups_{split}[{attr!r}] must be int64 of shape "
                        f"{tuple(y.shape)}, got {codes.dtype} {tuple(codes.shape)}"
                    )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"{self.name}: train inputs {tuple(self.x_train.shape[1:])} and test "
                f"inputs {tuple(self.x_test.shape[1:])} differ in shape"
            )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, ``x_train.shape[1:]``."""
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.y_train)}, test={len(self.y_test)}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"groups={sorted(self.groups_train)})"
        )


def resolve_data_dir(data_dir: str | os.PathLike[str] | None) -> Path:
    """Return the absolute data root.

    Parameters
    ----------
    data_dir : str or PathLike or None
        The data root; ``None`` means ``$FLSEC_DATA_DIR`` if set, else ``./data``.

    Returns
    -------
    Path
        The root as an absolute path (it need not exist).
    """
    if data_dir is None:
        data_dir = os.environ.get(DATA_DIR_ENV, "data")
    return Path(data_dir).expanduser().resolve()


class DataError(ValueError):
    """A dataset file exists but cannot be read (truncated, corrupt); the message names it."""


def corrupt_file_error(path: Path, err: BaseException) -> DataError:
    """Build the error raised when ``path`` cannot be read: what is wrong and what to do."""
    reason = str(err) or type(err).__name__
    return DataError(
        f"{path}: cannot read it ({type(err).__name__}: {reason}); the file is truncated or "
        "corrupt: replace it (or delete it and set data.download=true where available)"
    )


def missing_files_error(
    dataset: str, paths: Iterable[Path], *, downloadable: bool = True
) -> FileNotFoundError:
    """Build the error raised when a dataset's files are absent.

    Parameters
    ----------
    dataset : str
        Registry name of the dataset.
    paths : Iterable[Path]
        The expected files that were not found.
    downloadable : bool
        Whether ``data.download=true`` can fetch the files.

    Returns
    -------
    FileNotFoundError
        An error naming every missing path and how to fix it.
    """
    listed = "\n  ".join(str(p) for p in paths)
    fix = (
        "Set data.data_dir to the folder that holds them, or set data.download=true "
        "to download them."
        if downloadable
        else "Set data.data_dir to the folder that holds them (this dataset has no download)."
    )
    return FileNotFoundError(f"{dataset}: missing file(s):\n  {listed}\n{fix}")


def images_to_tensor(images: np.ndarray, scale: float) -> torch.Tensor:
    """Convert an integer image array to a float32 tensor in ``[0, 1]``.

    Parameters
    ----------
    images : np.ndarray
        Array of shape ``(N, C, H, W)`` with values in ``[0, scale]``.
    scale : float
        The largest possible value (255 for bytes, 16 for sklearn digits).

    Returns
    -------
    torch.Tensor
        float32 tensor of the same shape, divided by ``scale``.
    """
    array = np.ascontiguousarray(images, dtype=np.float32)
    return torch.from_numpy(array).div_(scale)


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """Convert integer labels to an int64 tensor of shape ``(N,)``.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels of any shape with ``N`` elements.

    Returns
    -------
    torch.Tensor
        int64 tensor of shape ``(N,)``.
    """
    return torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64).reshape(-1))


def stratified_split(
    images: np.ndarray, labels: np.ndarray, test_size: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split arrays into train and test parts with the same class proportions.

    Parameters
    ----------
    images : np.ndarray
        Inputs, first axis the sample axis.
    labels : np.ndarray
        Labels ``(N,)``, used for stratification.
    test_size : float
        Fraction of samples put in the test part.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    tuple of np.ndarray
        ``(x_train, x_test, y_train, y_test)``.
    """
    from sklearn.model_selection import train_test_split

    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=test_size, stratify=labels, random_state=seed
    )
    return x_train, x_test, y_train, y_test
