"""SharedIndices: the partition indices travel as an object reference, fetched once per process."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from flsec_flower.app import shared_indices
from flsec_flower.app.client_app import make_cell_client_fn
from flsec_flower.app.shared_indices import SharedIndices
from flsec_flower.config import ExperimentConfig


class FakeRef:
    """Stands in for a ``ray.ObjectRef``: only ``hex()`` is used."""

    def __init__(self, key: str) -> None:
        self.key = key

    def hex(self) -> str:
        return self.key


STORE: dict[str, list[list[np.ndarray]]] = {}
CALLS: list[str] = []


def fetch(ref: FakeRef) -> list[list[np.ndarray]]:
    CALLS.append(ref.key)
    return STORE[ref.key]


@pytest.fixture(autouse=True)
def fresh_process_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shared_indices, "_RESOLVED", {})
    CALLS.clear()


def cells(n_cells: int, n_clients: int = 100, size: int = 600) -> list[list[np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        [rng.permutation(n_clients * size)[:size] for _ in range(n_clients)] for _ in range(n_cells)
    ]


def test_pickled_client_fn_does_not_grow_with_the_number_of_cells():
    sizes = {}
    for n in (1, 20):
        STORE[f"k{n:02d}"] = cells(n)
        cfgs = [ExperimentConfig() for _ in range(n)]
        client_fn = make_cell_client_fn(cfgs, SharedIndices(FakeRef(f"k{n:02d}"), fetch))
        captured = dict(zip(client_fn.__code__.co_freevars, client_fn.__closure__, strict=True))
        sizes[n] = len(pickle.dumps(captured["indices"].cell_contents))
    plain = len(pickle.dumps(STORE["k20"]))
    assert sizes[20] == sizes[1] < 1_000 < plain  # 20 cells of 100 x 600 indices: ~9.6 MB plain
    assert CALLS == []  # pickling never fetched the indices


def test_indices_are_fetched_once_per_process_and_equal_the_originals():
    STORE["a"] = cells(3, n_clients=4, size=5)
    copy = pickle.loads(pickle.dumps(SharedIndices(FakeRef("a"), fetch)))
    assert len(copy) == 3
    for cell in range(3):
        for got, want in zip(copy[cell], STORE["a"][cell], strict=True):
            np.testing.assert_array_equal(got, want)
    again = pickle.loads(pickle.dumps(SharedIndices(FakeRef("a"), fetch)))
    assert again[2][1] is copy[2][1]
    assert CALLS == ["a"]


def test_fetched_arrays_are_writable_copies_and_shared_arrays_stay_shared():
    frozen = np.arange(5)
    frozen.setflags(write=False)  # ray.get hands out read-only views of the object store
    STORE["b"] = [[frozen], [frozen]]
    shared = SharedIndices(FakeRef("b"), fetch)
    assert shared[0][0].flags.writeable
    assert shared[0][0] is shared[1][0]
    assert shared[0][0] is not frozen


def test_a_new_reference_replaces_the_previous_simulations_indices():
    STORE["c"], STORE["d"] = cells(1, 2, 3), cells(2, 2, 3)
    assert len(SharedIndices(FakeRef("c"), fetch)) == 1
    assert len(SharedIndices(FakeRef("d"), fetch)) == 2
    assert list(shared_indices._RESOLVED) == ["d"]
