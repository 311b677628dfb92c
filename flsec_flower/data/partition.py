"""Split a labelled training set among federated clients.

``iid``, ``dirichlet`` and ``shards`` use the partitioners of ``flwr-datasets``
on a Hugging Face dataset with two columns, ``label`` and ``idx`` (the sample
index), and read each partition's ``idx`` column back. ``sorted`` is the
label-sorted split of the resampling paper (He et al.). A split depends only
on the labels and the arguments, so every Ray actor computes the same one;
results are cached per process.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import warnings
from typing import TYPE_CHECKING

import numpy as np

from flsec_flower.cache import BoundedCache
from flsec_flower.data.names import PARTITION_KINDS

if TYPE_CHECKING:
    from flwr_datasets.partitioner import Partitioner


MAX_MIN_PARTITION_SIZE = 10
"""Dirichlet redraws until every partition has this many samples (fewer on small data)."""

_CACHE: BoundedCache[tuple[object, ...], tuple[np.ndarray, ...]] = BoundedCache("splits", 32)


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    kind: str,
    *,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    seed: int = 0,
) -> list[np.ndarray]:
    """Assign sample indices to ``num_partitions`` clients.

    Parameters
    ----------
    labels : np.ndarray
        Integer class labels ``(N,)`` of the training set.
    num_partitions : int
        Number of clients, ``1 <= num_partitions <= N``.
    kind : str
        One of :data:`PARTITION_KINDS`:

        - ``"iid"``: a seeded shuffle cut into near-equal parts
          (``IidPartitioner``); uses every sample.
        - ``"dirichlet"``: for each class, shares drawn from
          ``Dirichlet(alpha)`` over the clients (``DirichletPartitioner``,
          no self-balancing); smaller ``alpha`` means more label skew. Draws
          are repeated (at most 10 times) until every client has
          ``min(10, N // (10 * num_partitions))`` samples, at least 1; uses
          every sample.
        - ``"shards"``: the pathological split of McMahan et al.
          (``ShardPartitioner``): sort by label, cut into
          ``num_partitions * shards_per_client`` equal shards of
          ``N // (num_partitions * shards_per_client)`` samples, give each
          client ``shards_per_client`` random shards; the remainder is unused.
        - ``"sorted"``: stable sort by label, cut into ``num_partitions``
          contiguous chunks whose sizes differ by at most one (He et al.);
          uses every sample.
    alpha : float
        Dirichlet concentration, ``> 0`` (used by ``"dirichlet"``).
    shards_per_client : int
        Shards per client, ``>= 1`` (used by ``"shards"``).
    seed : int
        Seed, ``>= 0``; the same seed gives the same split.

    Returns
    -------
    list[np.ndarray]
        One sorted, read-only int64 index array per partition; no index is
        in two partitions.

    Raises
    ------
    ValueError
        If an argument is invalid (the message names it), or if Dirichlet
        sampling cannot give every client a sample at this ``alpha``.

    Examples
    --------
    >>> parts = partition_indices(np.array([0, 0, 1, 1, 2, 2]), 3, "sorted")
    >>> [p.tolist() for p in parts]
    [[0, 1], [2, 3], [4, 5]]
    """
    labels = _check_labels(labels)
    _check_args(len(labels), num_partitions, kind, alpha, shards_per_client, seed)
    num_partitions, alpha = int(num_partitions), float(alpha)
    shards_per_client, seed = int(shards_per_client), int(seed)
    key = (
        hashlib.sha1(labels.tobytes()).hexdigest(),
        len(labels),
        num_partitions,
        kind,
        alpha if kind == "dirichlet" else None,
        shards_per_client if kind == "shards" else None,
        seed,
    )
    split = _CACHE.get_or_build(
        key,
        lambda: tuple(
            _freeze(p) for p in _split(labels, num_partitions, kind, alpha, shards_per_client, seed)
        ),
    )
    return list(split)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    """Return the labels as a contiguous int64 vector, or raise ValueError."""
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.int64)


def _is_int(value: object) -> bool:
    """Return whether ``value`` is an integer (numpy included), excluding bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_args(
    n: int, num_partitions: int, kind: str, alpha: float, shards_per_client: int, seed: int
) -> None:
    """Raise ValueError naming the first invalid argument."""
    if kind not in PARTITION_KINDS:
        raise ValueError(f"kind={kind!r} is not one of {', '.join(PARTITION_KINDS)}")
    if not _is_int(num_partitions) or not 1 <= num_partitions <= n:
        raise ValueError(
            f"num_partitions={num_partitions!r} must be an int between 1 and the number "
            f"of samples ({n})"
        )
    is_real = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool)
    if not (is_real and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha!r} must be a finite number > 0")
    if not _is_int(shards_per_client) or shards_per_client < 1:
        raise ValueError(f"shards_per_client={shards_per_client!r} must be an int >= 1")
    if kind == "shards" and num_partitions * shards_per_client > n:
        raise ValueError(
            f"shards_per_client={shards_per_client} with num_partitions={num_partitions} "
            f"needs at least {num_partitions * shards_per_client} samples, got {n}"
        )
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an int >= 0")


def _split(
    labels: np.ndarray,
    num_partitions: int,
    kind: str,
    alpha: float,
    shards_per_client: int,
    seed: int,
) -> list[np.ndarray]:
    """Compute the split (uncached)."""
    from flwr_datasets.partitioner import DirichletPartitioner, IidPartitioner, ShardPartitioner

    n = len(labels)
    if kind == "sorted":
        return np.array_split(np.argsort(labels, kind="stable"), num_partitions)
    if kind == "iid":
        order = np.random.default_rng(seed).permutation(n)
        partitioner: Partitioner = IidPartitioner(num_partitions=num_partitions)
        return _run(partitioner, labels[order], order)
    if kind == "dirichlet":
        min_size = max(1, min(MAX_MIN_PARTITION_SIZE, n // (10 * num_partitions)))
        partitioner = DirichletPartitioner(
            num_partitions=num_partitions,
            partition_by="label",
            alpha=alpha,
            min_partition_size=min_size,
            self_balancing=False,
            seed=seed,
        )
        try:
            return _run(partitioner, labels, np.arange(n))
        except ValueError as err:
            raise ValueError(
                f"alpha={alpha} with num_partitions={num_partitions} on {n} samples: "
                f"Dirichlet sampling did not give every partition {min_size} samples "
                f"in 10 draws; raise alpha or lower num_partitions ({err})"
            ) from err
    partitioner = ShardPartitioner(
        num_partitions=num_partitions,
        partition_by="label",
        num_shards_per_partition=shards_per_client,
        seed=seed,
    )
    return _run(partitioner, labels, np.arange(n))


def _run(partitioner: Partitioner, labels: np.ndarray, idx: np.ndarray) -> list[np.ndarray]:
    """Apply a flwr-datasets partitioner and return each partition's ``idx`` values."""
    import datasets

    partitioner.dataset = datasets.Dataset.from_dict({"label": labels, "idx": idx})
    with warnings.catch_warnings():
        # DirichletPartitioner warns on each redraw (a final failure raises), and
        # pyarrow warns about a sort option that ShardPartitioner's sort passes.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        return [
            partitioner.load_partition(pid).with_format("numpy")["idx"][:]
            for pid in range(partitioner.num_partitions)
        ]


def _freeze(indices: np.ndarray) -> np.ndarray:
    """Return the indices sorted, as a read-only int64 array."""
    frozen = np.sort(np.asarray(indices, dtype=np.int64))
    frozen.setflags(write=False)
    return frozen
