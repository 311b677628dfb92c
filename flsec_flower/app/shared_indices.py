"""Partition indices put once into Ray's object store instead of into every message.

Flower's Ray backend pickles the ``client_fn`` with every message it sends to
a client actor. A simulation that runs many experiments (a baseline's cells)
gives that function every experiment's partition indices (each a permutation
of the training set), so each message carried megabytes: the 114 cells of the
model-replacement baseline (57 distinct layouts) pickled 27.5 MB per message.
:class:`SharedIndices` pickles as an object reference only; each actor
process fetches the indices once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, overload

import numpy as np

Indices = list[list[np.ndarray]]
"""Each experiment's partition indices: ``indices[cell][partition_id]``."""

_RESOLVED: dict[str, Indices] = {}
"""The indices this process fetched, by object reference (one simulation at a time)."""


def _ray_get(ref: Any) -> Indices:
    import ray

    return ray.get(ref)


class SharedIndices(Sequence[list[np.ndarray]]):
    """Each experiment's partition indices, held in Ray's object store.

    Parameters
    ----------
    ref : ray.ObjectRef
        ``ray.put(indices)`` of a list (one entry per experiment) of lists of
        index arrays.
    fetch : callable, optional
        Resolves ``ref`` (default ``ray.get``); the first access in a process
        calls it, later ones read the process's copy.

    Notes
    -----
    Pickling keeps only ``ref`` (and ``fetch``), never the arrays. The arrays
    are copied out of the object store once per process, so they are
    writable; arrays shared between experiments stay shared.
    """

    def __init__(self, ref: Any, fetch: Callable[[Any], Indices] = _ray_get) -> None:
        self.ref = ref
        self.fetch = fetch

    def __getstate__(self) -> dict[str, Any]:
        return {"ref": self.ref, "fetch": self.fetch}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.ref = state["ref"]
        self.fetch = state["fetch"]

    def _lists(self) -> Indices:
        key = self.ref.hex()
        if key not in _RESOLVED:
            _RESOLVED.clear()
            copies: dict[int, np.ndarray] = {}
            _RESOLVED[key] = [
                [copies.setdefault(id(a), np.array(a)) for a in cell]
                for cell in self.fetch(self.ref)
            ]
        return _RESOLVED[key]

    @overload
    def __getitem__(self, cell: int) -> list[np.ndarray]: ...

    @overload
    def __getitem__(self, cell: slice) -> Sequence[list[np.ndarray]]: ...

    def __getitem__(self, cell: int | slice) -> list[np.ndarray] | Sequence[list[np.ndarray]]:
        return self._lists()[cell]

    def __len__(self) -> int:
        return len(self._lists())
