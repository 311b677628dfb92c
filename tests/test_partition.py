import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flsec_flower.data import PARTITION_KINDS, load_dataset, partition_indices
from flsec_flower.data import partition as partition_module


@pytest.fixture
def digit_labels() -> np.ndarray:
    return load_dataset("digits", seed=0).y_train.numpy()


@pytest.fixture
def no_cache(monkeypatch):
    partition_module._CACHE.clear()


def _labels(n: int = 2000, classes: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, n)


def _check_disjoint(parts: list[np.ndarray], n: int) -> np.ndarray:
    assert all(p.dtype == np.int64 for p in parts)
    assert all(np.all(np.diff(p) > 0) for p in parts)  # sorted, no repeats
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined)
    assert joined.min() >= 0
    assert joined.max() < n
    return joined


def _max_class_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


@pytest.mark.parametrize("kind", PARTITION_KINDS)
def test_partitions_are_disjoint_and_cover(digit_labels, kind):
    parts = partition_indices(digit_labels, 10, kind, alpha=0.5, shards_per_client=2, seed=3)
    assert len(parts) == 10
    assert all(len(p) > 0 for p in parts)
    joined = _check_disjoint(parts, len(digit_labels))
    if kind == "shards":
        shard = len(digit_labels) // 20
        assert sorted({len(p) for p in parts}) == [2 * shard]
    else:
        assert len(joined) == len(digit_labels)


@pytest.mark.parametrize("kind", ["iid", "dirichlet", "shards"])
def test_seed_determines_split(no_cache, kind):
    labels = _labels()
    first = partition_indices(labels, 8, kind, seed=5)
    partition_module._CACHE.clear()
    again = partition_indices(labels, 8, kind, seed=5)
    other = partition_indices(labels, 8, kind, seed=6)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_results_are_cached_and_read_only():
    labels = _labels(seed=1)
    first = partition_indices(labels, 4, "dirichlet", alpha=0.3, seed=0)
    second = partition_indices(labels.astype(np.int32), 4, "dirichlet", alpha=0.3, seed=0)
    assert all(a is b for a, b in zip(first, second, strict=True))
    second.pop()  # the returned list is the caller's own
    assert len(partition_indices(labels, 4, "dirichlet", alpha=0.3, seed=0)) == 4
    with pytest.raises(ValueError, match="read-only"):
        first[0][0] = 0


def test_iid_parts_match_global_distribution(digit_labels):
    parts = partition_indices(digit_labels, 5, "iid", seed=0)
    assert max(len(p) for p in parts) - min(len(p) for p in parts) <= 1
    global_share = np.bincount(digit_labels) / len(digit_labels)
    for p in parts:
        share = np.bincount(digit_labels[p], minlength=10) / len(p)
        assert np.abs(share - global_share).max() < 0.06
    # Not contiguous blocks of the input order: the shuffle happened.
    assert not np.array_equal(parts[0], np.arange(len(parts[0])))


def test_dirichlet_skew_grows_as_alpha_falls():
    labels = _labels(n=3000)
    skew = {
        alpha: np.mean(
            [
                _max_class_share(
                    labels, partition_indices(labels, 10, "dirichlet", alpha=alpha, seed=s)
                )
                for s in range(3)
            ]
        )
        for alpha in (100.0, 1.0, 0.1)
    }
    assert skew[100.0] < 0.2  # near the global 0.1
    assert skew[100.0] < skew[1.0] < skew[0.1]
    assert skew[0.1] > 0.5


def test_dirichlet_gives_every_client_data_on_small_sets():
    labels = _labels(n=200, classes=4, seed=2)
    parts = partition_indices(labels, 20, "dirichlet", alpha=0.5, seed=0)
    assert min(len(p) for p in parts) >= 1
    assert sum(len(p) for p in parts) == 200


def test_dirichlet_impossible_split_names_alpha():
    labels = np.repeat([0, 1], 10)
    with pytest.raises(ValueError, match=r"alpha=0\.001"):
        partition_indices(labels, 10, "dirichlet", alpha=0.001, seed=0)


@pytest.mark.parametrize("shards_per_client", [1, 2, 3])
def test_shards_give_about_shards_per_client_classes(shards_per_client):
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 120))
    parts = partition_indices(labels, 10, "shards", shards_per_client=shards_per_client, seed=1)
    counts = [len(np.unique(labels[p])) for p in parts]
    # Shards come from the label-sorted order, so a shard spans at most two classes.
    assert max(counts) <= 2 * shards_per_client
    assert np.mean(counts) <= shards_per_client + 1
    assert min(counts) >= 1
    assert _max_class_share(labels, parts) >= 1 / (shards_per_client + 1)


def test_shards_with_class_aligned_shards_hold_whole_classes():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 100))
    parts = partition_indices(labels, 10, "shards", shards_per_client=2, seed=0)
    for p in parts:
        assert len(p) == 100
        assert all(c in (50, 100) for c in np.bincount(labels[p]) if c)


def test_sorted_gives_contiguous_label_sorted_chunks(digit_labels):
    parts = partition_indices(digit_labels, 7, "sorted")
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    for left, right in itertools.pairwise(parts):
        assert digit_labels[left].max() <= digit_labels[right].min()
    order = np.argsort(digit_labels, kind="stable")
    bounds = np.cumsum([0, *sizes])
    for p, start, stop in zip(parts, bounds, bounds[1:], strict=False):
        assert np.array_equal(p, np.sort(order[start:stop]))
    assert np.mean([len(np.unique(digit_labels[p])) for p in parts]) < 3


def test_single_partition_holds_everything(digit_labels):
    for kind in PARTITION_KINDS:
        (only,) = partition_indices(digit_labels, 1, kind, shards_per_client=1)
        assert np.array_equal(only, np.arange(len(digit_labels)))


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_partitions": 0}, "num_partitions"),
        ({"num_partitions": 21}, "num_partitions"),
        ({"num_partitions": 2.5}, "num_partitions"),
        ({"kind": "powerlaw"}, "kind"),
        ({"alpha": 0.0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"shards_per_client": 0}, "shards_per_client"),
        ({"kind": "shards", "num_partitions": 10, "shards_per_client": 3}, "shards_per_client"),
        ({"seed": -1}, "seed"),
        ({"labels": np.zeros((4, 5), dtype=np.int64)}, "labels"),
        ({"labels": np.linspace(0, 1, 20)}, "labels"),
        ({"labels": np.array([], dtype=np.int64)}, "labels"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, name):
    args = {"labels": np.arange(20) % 3, "num_partitions": 4, "kind": "dirichlet"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        partition_indices(args.pop("labels"), args.pop("num_partitions"), args.pop("kind"), **args)


@settings(max_examples=25, deadline=None)
@given(
    n_per_part=st.integers(min_value=50, max_value=120),
    num_partitions=st.integers(min_value=1, max_value=8),
    classes=st.integers(min_value=1, max_value=6),
    kind=st.sampled_from(PARTITION_KINDS),
    alpha=st.floats(min_value=1.0, max_value=50.0),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_partition_invariants(n_per_part, num_partitions, classes, kind, alpha, seed):
    n = n_per_part * num_partitions
    labels = np.random.default_rng(seed).integers(0, classes, n)
    parts = partition_indices(labels, num_partitions, kind, alpha=alpha, seed=seed)
    assert len(parts) == num_partitions
    assert all(len(p) > 0 for p in parts)
    joined = _check_disjoint(parts, n)
    expected = n if kind != "shards" else num_partitions * 2 * (n // (num_partitions * 2))
    assert len(joined) == expected
