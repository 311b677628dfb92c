"""Who holds which training examples: honest split, attacker data, the papers' layouts.

:func:`client_layout` builds on :func:`~flsec_flower.data.partition.partition_indices`
and adds what the five papers' setups need:

- ``honest_only``: the split is among the honest clients only (He et al.,
  "the dataset is sorted by labels and sequentially divided into equal parts
  among good workers"); otherwise among all clients, attackers included
  (DiverseFL: "partition the sorted data into n subsets" for ``n = 23``
  clients of which 5 are Byzantine).
- ``mimic2`` (He et al., Sec. 2.3): "half of the good workers have same
  datasets": the first ``floor(h / 2)`` honest clients (by partition id) all
  hold the union of their parts; the others keep theirs.
- ``reserved`` examples (Bagdasaryan et al.'s semantic-backdoor images, the
  class-owner's classes) never reach an honest client.
- the attackers' data (``attack_kind``):

  - ``"own"``: their own part of the split among all clients;
  - ``"honest_union"``: every honest client's data (He et al.: "Byzantine
    workers have access to the dataset on all good workers");
  - ``"iid_sample"``: ``sample_size`` examples drawn uniformly without
    replacement from the *whole* training set, seeded by ``(seed,
    partition id)`` only (Ozdayi et al.: one agent holds 1000 uniform
    samples). The draw does not depend on the honest split, and the honest
    split does not exclude it: the sample may share examples with honest
    clients, as an attacker sampling the same distribution would;
  - ``"class_owner"``: every training example of ``classes`` leaves the
    honest clients and is split into contiguous near-equal chunks among the
    attackers (DiverseFL's backdoor: the clients owning digit 3 are the
    Byzantine ones); added to their own part when the split includes them.

  With ``"honest_union"`` or ``"iid_sample"`` and a split among all clients,
  the attackers' own parts of the split are held by nobody.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np

from flsec_flower.data.names import ATTACK_DATA_KINDS
from flsec_flower.data.partition import partition_indices
from flsec_flower.seeds import Stream, numpy_rng


def client_layout(
    labels: np.ndarray,
    num_clients: int,
    malicious: Collection[int],
    kind: str,
    *,
    alpha: float = 0.5,
    shards_per_client: int = 2,
    seed: int = 0,
    honest_only: bool = False,
    mimic2: bool = False,
    attack_kind: str = "own",
    sample_size: int | None = None,
    classes: Collection[int] = (),
    reserved: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Training-set indices of every client ``0 .. num_clients - 1``.

    Parameters
    ----------
    labels : np.ndarray
        Integer labels ``(N,)`` of the training set.
    num_clients : int
        Number of clients.
    malicious : collection of int
        Attackers' partition ids.
    kind, alpha, shards_per_client, seed
        The split, as in :func:`~flsec_flower.data.partition.partition_indices`.
    honest_only : bool
        Split among the honest clients only.
    mimic2 : bool
        The first half of the honest clients hold one identical dataset.
    attack_kind : str
        One of :data:`ATTACK_DATA_KINDS`.
    sample_size : int, optional
        Size of each attacker's sample (``"iid_sample"``), ``1 .. N``.
    classes : collection of int
        Classes the attackers own (``"class_owner"``).
    reserved : np.ndarray, optional
        Indices no honest client may hold (semantic-backdoor images).

    Returns
    -------
    list[np.ndarray]
        One sorted, read-only int64 index array per client.

    Raises
    ------
    ValueError
        Naming the argument, when the layout cannot be built.

    Examples
    --------
    >>> y = np.array([0, 0, 1, 1, 2, 2])
    >>> parts = client_layout(y, 3, {2}, "sorted", honest_only=True, attack_kind="honest_union")
    >>> [p.tolist() for p in parts]
    [[0, 1, 2], [3, 4, 5], [0, 1, 2, 3, 4, 5]]
    """
    labels = np.asarray(labels)
    n = len(labels)
    bad = sorted(i for i in malicious if not 0 <= i < num_clients)
    if bad:
        raise ValueError(f"malicious ids {bad} outside 0..{num_clients - 1}")
    if attack_kind not in ATTACK_DATA_KINDS:
        raise ValueError(
            f"attack_kind={attack_kind!r} is not one of {', '.join(ATTACK_DATA_KINDS)}"
        )
    attackers = sorted(set(malicious))
    honest = [i for i in range(num_clients) if i not in set(attackers)]
    excluded = np.zeros(n, dtype=bool)
    if reserved is not None:
        excluded[np.asarray(reserved, dtype=np.int64)] = True
    owned = np.zeros(n, dtype=bool)
    if attack_kind == "class_owner" and attackers:
        owned = np.isin(labels, np.asarray(list(classes), dtype=np.int64))
        if not owned.any():
            raise ValueError(f"classes={list(classes)!r}: no training example has these labels")
    pool = np.flatnonzero(~(excluded | owned))
    holders = honest if honest_only else list(range(num_clients))
    if not holders:
        raise ValueError("honest_only: there is no honest client to split the data among")
    parts = {
        holder: pool[part]
        for holder, part in zip(
            holders,
            partition_indices(
                labels[pool],
                len(holders),
                kind,
                alpha=alpha,
                shards_per_client=shards_per_client,
                seed=seed,
            ),
            strict=True,
        )
    }
    if mimic2:
        twins = honest[: len(honest) // 2]
        if twins:
            shared = np.concatenate([parts[i] for i in twins])
            parts.update({i: shared for i in twins})
    empty = np.empty(0, dtype=np.int64)
    honest_union = np.unique(np.concatenate([parts[i] for i in honest] or [empty]))
    owned_chunks = np.array_split(np.flatnonzero(owned), max(1, len(attackers)))
    for rank, pid in enumerate(attackers):
        own = parts.get(pid, empty)
        if attack_kind == "honest_union":
            parts[pid] = honest_union
        elif attack_kind == "iid_sample":
            if sample_size is None or not 1 <= sample_size <= n:
                raise ValueError(f"sample_size={sample_size!r} must be between 1 and {n}")
            rng = numpy_rng(seed, pid, Stream.ATTACKER_SAMPLE)
            parts[pid] = rng.choice(n, size=sample_size, replace=False)
        elif attack_kind == "class_owner":
            parts[pid] = np.concatenate([own, owned_chunks[rank]])
        else:
            parts[pid] = own
    return [_freeze(parts[i]) for i in range(num_clients)]


def _freeze(indices: np.ndarray) -> np.ndarray:
    frozen = np.sort(np.asarray(indices, dtype=np.int64))
    frozen.setflags(write=False)
    return frozen
