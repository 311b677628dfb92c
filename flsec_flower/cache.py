"""One bounded, thread-safe, least-recently-used cache for everything loaded once per process.

Ray actors and sweeps live long and serve many experiments: a module-level
dict that is never emptied grows with every dataset, split and partition an
actor has seen. Every such cache is a :class:`BoundedCache`, registered by
name, so its size is capped and :func:`clear_all` empties them all (tests,
long sweeps).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

_ALL: dict[str, BoundedCache] = {}


class BoundedCache(Generic[K, V]):
    """A least-recently-used mapping of at most ``maxsize`` entries.

    Parameters
    ----------
    name : str
        Unique name (shown by :func:`cache_sizes`).
    maxsize : int
        Entries kept; the least recently used one is dropped beyond it.

    Examples
    --------
    >>> cache = BoundedCache("doctest-squares", maxsize=2)
    >>> [cache.get_or_build(k, lambda k=k: k * k) for k in (1, 2, 1, 3)]
    [1, 4, 1, 9]
    >>> sorted(cache.keys())  # 2 was the least recently used
    [1, 3]
    """

    def __init__(self, name: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"cache {name!r}: maxsize must be >= 1, got {maxsize}")
        if name in _ALL:
            raise ValueError(f"a cache named {name!r} exists already")
        self.name = name
        self.maxsize = maxsize
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.RLock()
        _ALL[name] = self

    def get_or_build(self, key: K, build: Callable[[], V]) -> V:
        """Return the entry of ``key``, building and storing it on a miss."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            value = build()
            self._entries[key] = value
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
            return value

    def keys(self) -> list[K]:
        """The cached keys, least recently used first."""
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        """Drop every entry."""
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


def clear_all() -> None:
    """Empty every registered cache."""
    for cache in _ALL.values():
        cache.clear()


def cache_sizes() -> dict[str, int]:
    """Number of entries of every registered cache, by name."""
    return {name: len(cache) for name, cache in _ALL.items()}
