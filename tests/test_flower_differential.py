"""Differential test against Flower's own rules (``flwr.server.strategy.aggregate``).

Krum, Multi-Krum, Bulyan, the coordinate median and the trimmed mean, each on
300 random inputs: half continuous (float32 normal rows of different
spreads), half one-dimensional small integers. The latter have exact squared
distances in both implementations (Flower squares a float32 ``norm``, which
is exact only for a single coordinate) and many exact ties, which must break
the same way: by the lower row. Flower's selections are read by
wrapping its internal helpers, so selections are compared exactly, not only
the aggregates.

Where the definitions differ, the common part is compared:

* Multi-Krum on an exact tie of the m-th and (m+1)-th smallest scores: Flower's
  ``np.argsort`` (not stable) may take either row, ours takes the lower row;
  such inputs compare only the rows below the tie.
* Bulyan's coordinate step on exact ties of distances to the median: Flower's
  ``np.argpartition`` leaves them unspecified, ours takes the lower values;
  on integer inputs only the selection is compared.
"""

import numpy as np
import pytest
import torch
from flwr.server.strategy import aggregate as flower

from strategies.bulyan import bulyan
from strategies.krum import krum
from strategies.median import coordinate_median
from strategies.trimmed_mean import trimmed_mean

CASES = 300


def random_input(seed, n_range=(5, 26), d_range=(1, 40)):
    """(updates, f, integer?) for one case; f within the rule's bound is drawn later."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(*n_range))
    d = int(rng.integers(*d_range))
    integer = seed % 2 == 1
    if integer:
        u = rng.integers(-6, 7, size=(n, 1)).astype(np.float32)
    else:
        u = (rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, (n, 1)) + rng.normal(size=d)).astype(
            np.float32
        )
    return u, rng, integer


def as_results(u):
    """Flower's input: one single-array model per row, the row index as the sample count."""
    return [([row.copy()], i + 1) for i, row in enumerate(u)]


def row_of(results, arrays):
    return next(i for i, (a, _) in enumerate(results) if a is arrays)


def test_krum_selection_equals_flower():
    for seed in range(CASES):
        u, rng, _ = random_input(seed)
        n = u.shape[0]
        f = int(rng.integers(0, (n - 3) // 2 + 1))
        results = as_results(u)
        theirs = row_of(results, flower.aggregate_krum(results, num_malicious=f, to_keep=0))
        assert krum(torch.from_numpy(u), f).selected == [theirs], f"seed {seed}"


def test_multi_krum_selection_equals_flower(monkeypatch):
    picked = []
    original = flower.aggregate
    monkeypatch.setattr(
        flower, "aggregate", lambda best: picked.append([c - 1 for _, c in best]) or original(best)
    )
    for seed in range(CASES):
        u, rng, _ = random_input(10_000 + seed)
        n = u.shape[0]
        f = int(rng.integers(0, (n - 3) // 2 + 1))
        m = int(rng.integers(2, n - f + 1))
        flower.aggregate_krum(as_results(u), num_malicious=f, to_keep=m)
        ours = krum(torch.from_numpy(u), f, m=m)
        boundary = float(torch.sort(ours.scores).values[m - 1])
        sure = {i for i in ours.selected if ours.scores[i] < boundary}
        theirs = set(picked[-1])
        assert len(theirs) == m and sure <= theirs, f"seed {seed}"
        assert all(float(ours.scores[i]) == boundary for i in theirs - sure), f"seed {seed}"
        if m == n or float(torch.sort(ours.scores).values[m]) > boundary:
            assert theirs == set(ours.selected), f"seed {seed}"


def test_bulyan_selection_and_aggregate_equal_flower(monkeypatch):
    chosen = []
    original = flower._aggregate_n_closest_weights

    def spy(median, selected, beta_closest):
        chosen.append([c - 1 for _, c in selected])
        return original(median, selected, beta_closest)

    monkeypatch.setattr(flower, "_aggregate_n_closest_weights", spy)
    for seed in range(CASES):
        u, rng, integer = random_input(20_000 + seed, n_range=(7, 20), d_range=(1, 12))
        n = u.shape[0]
        f = int(rng.integers(1, (n - 3) // 4 + 1))
        theirs = flower.aggregate_bulyan(
            as_results(u), num_malicious=f, aggregation_rule=flower.aggregate_krum, to_keep=0
        )
        ours = bulyan(torch.from_numpy(u), f)
        assert ours.selected == chosen[-1], f"seed {seed}"
        if not integer:
            np.testing.assert_allclose(ours.update.numpy(), theirs[0], rtol=1e-5, atol=1e-6)


def test_median_equals_flower():
    for seed in range(CASES):
        u, _, _ = random_input(30_000 + seed, n_range=(1, 26))
        theirs = flower.aggregate_median(as_results(u))[0]
        np.testing.assert_allclose(
            coordinate_median(torch.from_numpy(u)).update.numpy(), theirs, rtol=1e-6, atol=1e-7
        )


def test_trimmed_mean_equals_flower():
    for seed in range(CASES):
        u, rng, _ = random_input(40_000 + seed, n_range=(1, 26))
        beta = float(rng.uniform(0.0, 0.49))
        theirs = flower.aggregate_trimmed_avg(as_results(u), proportiontocut=beta)[0]
        ours = trimmed_mean(torch.from_numpy(u), beta=beta).update.numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_the_spies_see_flowers_real_selection(seed, monkeypatch):
    """The wrapped helpers report what Flower averaged: recompute its Multi-Krum from them."""
    picked = []
    original = flower.aggregate
    monkeypatch.setattr(
        flower, "aggregate", lambda best: picked.append([c - 1 for _, c in best]) or original(best)
    )
    u, _, _ = random_input(50_000 + seed)
    out = flower.aggregate_krum(as_results(u), num_malicious=1, to_keep=3)
    weights = np.array(picked[0], dtype=np.float64) + 1
    expected = (weights[:, None] * u[picked[0]]).sum(0) / weights.sum()
    np.testing.assert_allclose(out[0], expected, rtol=1e-5)
