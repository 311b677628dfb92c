"""UCI Adult (census income) as a tabular fairness dataset.

Preprocessing follows the description of the fairness-attack code (Rance &
Svoboda): continuous columns divided by their maximum, categorical columns
one-hot encoded, one-hot features seen 9 times or fewer dropped. The choices
the description leaves open are fixed so that the real UCI files give the
103 features it reports:

- every statistic (column maxima, category vocabulary, the "seen more than 9
  times" count) is fitted on ``adult.data`` only and applied unchanged to
  ``adult.test`` (no test-set information leaks into the features);
- all six continuous columns are kept, ``fnlwgt`` included;
- ``?`` (missing) is kept as a category of its own and no row is dropped
  (32,561 train, 16,281 test);
- ``sex`` is the sensitive attribute: it is not an input feature, it is
  returned as the group code ``groups["sex"]`` (1 Male, 0 Female).

That yields 6 continuous + 97 one-hot = 103 features (dropped as rare:
``workclass=Never-worked`` (7), ``occupation=Armed-Forces`` (9),
``native-country=Holand-Netherlands`` (1)). Two other readings also give 103
on these files: fitting on train+test with ``fnlwgt`` dropped, ``sex`` kept as
a feature and ``?`` encoded as all zeros; or fitting on train+test with
``fnlwgt`` and ``sex`` kept and rows with ``?`` removed.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from flsec_flower.data.dataset import (
    DataError,
    Dataset,
    corrupt_file_error,
    labels_to_tensor,
    missing_files_error,
)

if TYPE_CHECKING:
    import pandas as pd

COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
)
CONTINUOUS = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = (
    "workclass",
    "education",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "native-country",
)
SENSITIVE = "sex"
MIN_COUNT = 10
"""A one-hot feature is kept only if it is set in at least this many training rows."""

URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/"
FILES = ("adult.data", "adult.test")


def read_adult_file(path: Path) -> pd.DataFrame:
    """Read one UCI Adult file into a DataFrame of strings and integers.

    Parameters
    ----------
    path : Path
        ``adult.data`` or ``adult.test`` (lines starting with ``|`` are
        comments; values are separated by ``", "``; test labels end in ``.``).

    Returns
    -------
    pd.DataFrame
        One row per record with the 15 UCI columns; ``income`` without the
        trailing ``.``.
    """
    import pandas as pd

    try:
        frame = pd.read_csv(
            path,
            header=None,
            names=list(COLUMNS),
            skipinitialspace=True,
            comment="|",
            dtype={c: str for c in COLUMNS if c not in CONTINUOUS},
        )
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise corrupt_file_error(path, err) from err
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def download_adult(folder: Path) -> None:
    """Download ``adult.data`` and ``adult.test`` from the UCI repository.

    Parameters
    ----------
    folder : Path
        Destination folder (created if needed); each file is written to a
        temporary name first, so an interrupted download leaves no partial file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        target = folder / name
        if target.is_file():
            continue
        partial = target.with_suffix(target.suffix + ".part")
        urllib.request.urlretrieve(URL + name, partial)
        partial.replace(target)


def _features(train: pd.DataFrame, test: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Build the float32 feature matrices, fitting every statistic on ``train``."""
    train_blocks: list[np.ndarray] = []
    test_blocks: list[np.ndarray] = []
    for column in CONTINUOUS:
        scale = float(train[column].max()) or 1.0  # an all-zero column stays zero
        train_blocks.append((train[column].to_numpy(np.float64) / scale)[:, None])
        test_blocks.append((test[column].to_numpy(np.float64) / scale)[:, None])
    for column in CATEGORICAL:
        counts = train[column].value_counts()
        categories = np.array(sorted(counts.index[counts >= MIN_COUNT]), dtype=object)
        train_blocks.append(train[column].to_numpy(object)[:, None] == categories)
        test_blocks.append(test[column].to_numpy(object)[:, None] == categories)
    return (
        np.hstack(train_blocks).astype(np.float32),
        np.hstack(test_blocks).astype(np.float32),
    )


def _labels_and_groups(frame: pd.DataFrame, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Return income labels (>50K -> 1) and sex codes (Male -> 1), checking the values."""
    income = frame["income"].to_numpy(object)
    sex = frame[SENSITIVE].to_numpy(object)
    bad_income = set(income) - {">50K", "<=50K"}
    bad_sex = set(sex) - {"Male", "Female"}
    if bad_income or bad_sex:
        raise DataError(
            f"{path}: unexpected income {sorted(map(str, bad_income))} or "
            f"sex {sorted(map(str, bad_sex))} values (a truncated or corrupt file?)"
        )
    return (income == ">50K").astype(np.int64), (sex == "Male").astype(np.int64)


def load_adult(root: Path, download: bool = False) -> Dataset:
    """Load UCI Adult from ``<root>/adult/adult.{data,test}``.

    See the module docstring for the preprocessing.

    Parameters
    ----------
    root : Path
        The data root.
    download : bool
        Download the UCI files when missing.

    Returns
    -------
    Dataset
        Features ``(N, 103)`` in ``[0, 1]`` on the training rows, binary labels
        (about 24% positive), and ``groups_train/test["sex"]`` (1 Male, 0 Female).

    Raises
    ------
    FileNotFoundError
        If a file is missing and ``download`` is false.
    DataError
        If a file cannot be parsed or has unexpected values (truncated, corrupt).
    """
    folder = root / "adult"
    paths = [folder / name for name in FILES]
    if download and not all(p.is_file() for p in paths):
        download_adult(folder)
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise missing_files_error("adult", missing)
    train, test = (read_adult_file(p) for p in paths)
    x_train, x_test = _features(train, test)
    y_train, sex_train = _labels_and_groups(train, paths[0])
    y_test, sex_test = _labels_and_groups(test, paths[1])
    return Dataset(
        name="adult",
        x_train=torch.from_numpy(x_train),
        y_train=labels_to_tensor(y_train),
        x_test=torch.from_numpy(x_test),
        y_test=labels_to_tensor(y_test),
        num_classes=2,
        groups_train={SENSITIVE: labels_to_tensor(sex_train)},
        groups_test={SENSITIVE: labels_to_tensor(sex_test)},
    )
