"""MNIST and Fashion-MNIST from IDX files in torchvision's folder layout.

The files are read with numpy, not through torchvision's dataset classes: the
offline copies may be recompressed (same bytes inside, different ``.gz`` md5),
which torchvision's integrity check would reject. torchvision is used only to
download, when asked.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from flsec_flower.data.dataset import (
    DataError,
    Dataset,
    corrupt_file_error,
    images_to_tensor,
    labels_to_tensor,
    missing_files_error,
)

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code (third magic byte) -> element dtype (big-endian on disk)."""

FOLDERS = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
"""Registry name -> torchvision's folder name under the data root."""

FILE_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file, gzipped (``.gz``) or not.

    The header is two zero bytes, a type code, the number of dimensions ``d``,
    then ``d`` big-endian uint32 sizes; the data follows in C order.

    Parameters
    ----------
    path : Path
        The file to read.

    Returns
    -------
    np.ndarray
        The array in native byte order, with the shape given by the header.

    Raises
    ------
    DataError
        If the file cannot be decompressed, the header is malformed or the
        data length does not match it.

    Examples
    --------
    >>> read_idx(Path("t10k-labels-idx1-ubyte.gz")).shape  # doctest: +SKIP
    (10000,)
    """
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            raw = stream.read()
    except (EOFError, OSError, zlib.error) as err:
        raise corrupt_file_error(path, err) from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (magic bytes {raw[:4]!r})")
    dtype = IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header_len = 4 + 4 * ndim
    shape = tuple(int(n) for n in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header_len != expected:
        raise DataError(
            f"{path}: header says shape {shape} ({expected} bytes of data), "
            f"file has {len(raw) - header_len}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header_len).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find(raw_dir: Path, stem: str) -> Path | None:
    """Return the uncompressed file if present, else the ``.gz`` one, else None."""
    for candidate in (raw_dir / stem, raw_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _raw_files(name: str, root: Path) -> tuple[dict[str, Path], list[Path]]:
    """Return the files found (stem -> path) and the expected paths of missing ones."""
    raw_dir = root / FOLDERS[name] / "raw"
    found: dict[str, Path] = {}
    missing: list[Path] = []
    for stem in (stem for pair in FILE_STEMS.values() for stem in pair):
        path = _find(raw_dir, stem)
        if path is None:
            missing.append(raw_dir / f"{stem}.gz")
        else:
            found[stem] = path
    return found, missing


def download_mnist_family(name: str, root: Path) -> None:
    """Download the raw IDX files with torchvision into ``<root>/<Folder>/raw``.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion_mnist"``.
    root : Path
        The data root.
    """
    from torchvision import datasets

    dataset_class = datasets.MNIST if name == "mnist" else datasets.FashionMNIST
    dataset_class(str(root), train=True, download=True)


def load_mnist_family(name: str, root: Path, download: bool = False) -> Dataset:
    """Load MNIST or Fashion-MNIST from ``<root>/{MNIST,FashionMNIST}/raw``.

    Parameters
    ----------
    name : str
        ``"mnist"`` or ``"fashion_mnist"``.
    root : Path
        The data root in torchvision's layout.
    download : bool
        Download with torchvision when files are missing.

    Returns
    -------
    Dataset
        Images ``(N, 1, 28, 28)`` in ``[0, 1]``, 10 classes; 60,000 train and
        10,000 test samples.

    Raises
    ------
    FileNotFoundError
        If files are missing and ``download`` is false.
    """
    files, missing = _raw_files(name, root)
    if missing and download:
        download_mnist_family(name, root)
        files, missing = _raw_files(name, root)
    if missing:
        raise missing_files_error(name, missing)
    arrays = {}
    for split, (image_stem, label_stem) in FILE_STEMS.items():
        images = read_idx(files[image_stem])
        labels = read_idx(files[label_stem])
        if images.ndim != 3 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"{name}: {files[image_stem]} has shape {images.shape} but "
                f"{files[label_stem]} has shape {labels.shape}"
            )
        arrays[split] = (images[:, None], labels)
    return Dataset(
        name=name,
        x_train=images_to_tensor(arrays["train"][0], 255.0),
        y_train=labels_to_tensor(arrays["train"][1]),
        x_test=images_to_tensor(arrays["test"][0], 255.0),
        y_test=labels_to_tensor(arrays["test"][1]),
        num_classes=10,
    )
