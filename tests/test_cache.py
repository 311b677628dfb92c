"""The one bounded cache behind every load-once-per-process table."""

import threading

import pytest

from flsec_flower import cache as cache_module
from flsec_flower.app import client_app  # noqa: F401  (registers the client caches)
from flsec_flower.cache import BoundedCache, cache_sizes, clear_all
from flsec_flower.config import from_dict
from flsec_flower.experiment import client_env


def test_least_recently_used_entry_is_dropped_at_maxsize():
    cache = BoundedCache("test-lru", maxsize=2)
    built = []
    for key in ("a", "b", "a", "c", "b"):
        cache.get_or_build(key, lambda key=key: built.append(key) or key.upper())
    assert built == ["a", "b", "c", "b"]  # "b" was evicted by "c" ("a" had been used again)
    assert cache.keys() == ["c", "b"]
    assert len(cache) == 2


def test_concurrent_misses_build_once():
    cache = BoundedCache("test-threads", maxsize=4)
    calls = []
    barrier = threading.Barrier(8)

    def build():
        calls.append(1)
        return object()

    results = []

    def worker():
        barrier.wait()
        results.append(cache.get_or_build("k", build))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert all(r is results[0] for r in results)


def test_bad_size_and_duplicate_name_are_refused():
    with pytest.raises(ValueError, match="maxsize must be >= 1"):
        BoundedCache("test-zero", maxsize=0)
    BoundedCache("test-dup", maxsize=1)
    with pytest.raises(ValueError, match="'test-dup' exists already"):
        BoundedCache("test-dup", maxsize=1)


def test_every_process_cache_is_registered_bounded_and_cleared():
    names = {"datasets", "splits", "client_indices", "partition_tensors", "client_models"}
    assert names | {"run_configs"} <= set(cache_sizes())
    cfg = from_dict({"data": {"dataset": "digits", "num_clients": 3}, "rounds": 1})
    client_env(cfg, 1)
    sizes = cache_sizes()
    assert sizes["datasets"] >= 1 and sizes["client_indices"] >= 1
    assert sizes["partition_tensors"] >= 1
    assert all(c.maxsize >= 1 for c in cache_module._ALL.values())
    clear_all()
    assert all(size == 0 for size in cache_sizes().values())
