"""Bulyan: hand-computed cases, Flower's aggregate_bulyan, huge rows, strategy."""

import logging

import numpy as np
import pytest
import torch
from flwr.common import parameters_to_ndarrays
from flwr.server.strategy.aggregate import aggregate_bulyan, aggregate_krum

from strategies import Bulyan
from strategies._too_few import TooFewClientsError
from strategies.bulyan import bulyan, closest_to_median_mean, recursive_krum
from strategies.median import coordinate_median

SEVEN = torch.tensor(
    [[0.0, 1.0], [1.0, 2.0], [2.0, 0.0], [3.0, 4.0], [4.0, 3.0], [5.0, 5.0], [90.0, -90.0]]
)


def test_seven_points_by_hand():
    """n=7, f=1: theta=5 rows by recursive Krum, then beta=3 values around each median.

    Round 1 (7 left, 4 neighbours): scores 45, 25, 40, 32, 30, 69, huge -> row 1.
    Round 2 (6 left, 3): row 0: 5+18+20, row 2: 5+13+17, row 3: 2+5+17, row 4: 2+5+13 -> row 4.
    Round 3 (5 left, 2): row 0: 23, row 2: 22, row 3: 22, row 5: 39 -> tie, lower row 2.
    Round 4 (4 left, 1): row 0: 18, row 3: 5, row 5: 5 -> row 3. Round 5: rows 0, 5 tie -> 0.
    x of {1, 4, 2, 3, 0} sorted 0..4: median 2, closest three 1, 2, 3 -> 2; y likewise -> 2.
    """
    agg = bulyan(SEVEN, f=1)
    assert agg.selected == [1, 4, 2, 3, 0]
    assert torch.equal(agg.update, torch.tensor([2.0, 2.0]))


def test_closest_to_median_by_hand():
    rows = torch.tensor(
        [
            [0.0, 1.0, 2.0, 3.0, 100.0],  # median 2: closest three 1, 2, 3
            [-50.0, 9.0, 10.0, 10.5, 11.0],  # median 10: 10, 10.5, then 9 or 11 (a tie)
            [-9.0, -8.0, 0.0, 7.0, 9.0],  # median 0: 7, 0, -8 -> window -8, 0, 7
        ]
    )
    # Row 1: |9-10| = 1, |11-10| = 1: windows (9, 10, 10.5) and (10, 10.5, 11) are equally
    # near; the lower one is taken.
    expected = torch.tensor([2.0, (9.0 + 10.0 + 10.5) / 3, (-8.0 + 0.0 + 7.0) / 3])
    assert torch.allclose(closest_to_median_mean(rows, 3), expected)
    even = torch.tensor([[0.0, 1.0, 3.0, 4.0, 5.0, 40.0]])  # median 3.5: 3, 4, 5 and 1
    assert torch.allclose(closest_to_median_mean(even, 4), torch.tensor([13.0 / 4]))


def test_recursive_krum_with_f_zero_takes_everything():
    dist = torch.rand(6, 6, dtype=torch.float64)
    dist = dist + dist.T
    dist.fill_diagonal_(0.0)
    assert sorted(recursive_krum(dist, 0, 6)) == list(range(6))


@pytest.mark.parametrize(("n", "f"), [(6, 1), (10, 2), (3, 1)])
def test_too_few_updates_raise(n, f):
    with pytest.raises(ValueError, match=f"n={n}, f={f}"):
        bulyan(torch.zeros(n, 4), f=f)


def flower_results(u):
    a = u.numpy()
    return [([a[i, :6].reshape(2, 3).copy(), a[i, 6:].copy()], 1) for i in range(a.shape[0])]


def flat(arrays):
    return np.concatenate([x.ravel() for x in arrays])


@pytest.mark.parametrize(
    ("n", "f", "seed"), [(7, 1, 0), (11, 2, 1), (16, 3, 2), (20, 4, 3), (8, 0, 4)]
)
def test_equals_flower(n, f, seed):
    """Same definition as Flower's aggregate_bulyan with Krum (to_keep=0) as inner rule.

    Both keep f fixed while Krum runs on the shrinking set (at least one neighbour) and use
    the mean of the two middle values as the median of an even count.
    """
    rng = np.random.default_rng(seed)
    u = torch.from_numpy(
        (rng.normal(size=(n, 30)) * rng.uniform(0.5, 3, (n, 1))).astype(np.float32)
    )
    theirs = flat(aggregate_bulyan(flower_results(u), f, aggregate_krum, to_keep=0))
    np.testing.assert_allclose(bulyan(u, f).update.numpy(), theirs, rtol=1e-6, atol=1e-6)


def test_huge_rows_stay_out():
    rng = np.random.default_rng(5)
    u = torch.from_numpy(rng.normal(size=(11, 40)).astype(np.float32))
    honest = u.clone()
    u[0] = 1e30
    u[6] = -3e38
    agg = bulyan(u, f=2)
    assert 0 not in agg.selected and 6 not in agg.selected
    keep = [i for i in range(11) if i not in (0, 6)]
    assert (agg.update <= honest[keep].max(0).values).all()
    assert (agg.update >= honest[keep].min(0).values).all()


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(6)
    u = torch.from_numpy(rng.normal(size=(11, 500)).astype(np.float32))
    assert torch.equal(bulyan(u, f=2).update, bulyan(u, f=2, chunk=13).update)


# ---------------------------------------------------------------- strategy
def split(vector):
    return [vector[:6].reshape(2, 3), vector[6:]]


@pytest.fixture
def make(initialised_strategy):
    """``make(**kwargs)``: Bulyan from a zero model of two layers (2x3 and 4)."""
    init = [np.zeros((2, 3), np.float32), np.zeros(4, np.float32)]
    return lambda **kwargs: initialised_strategy(Bulyan, init, **kwargs)


def test_strategy_aggregates_like_the_function(fit_res, make):
    rng = np.random.default_rng(7)
    updates = rng.normal(size=(11, 10)).astype(np.float32)
    updates[3] = 1e6
    results = [fit_res(split(updates[i]), 20 + i, 5) for i in rng.permutation(11)]
    strategy = make(f=2)
    params, _ = strategy.aggregate_fit(1, results, [])
    expected = bulyan(torch.from_numpy(updates), f=2)
    np.testing.assert_allclose(
        flat(parameters_to_ndarrays(params)), expected.update.numpy(), rtol=1e-6
    )
    assert strategy.diagnostics[1].selected == [20 + i for i in expected.selected]
    assert 23 not in strategy.diagnostics[1].selected


def test_strategy_falls_back_with_a_warning(caplog, fit_res, make):
    rng = np.random.default_rng(8)
    updates = rng.normal(size=(9, 10)).astype(np.float32)
    results = [fit_res(split(updates[i]), i, 5) for i in range(9)]
    with pytest.raises(TooFewClientsError, match="Bulyan needs n >= 4f"):
        make(f=3).aggregate_fit(1, results, [])
    with caplog.at_level(logging.WARNING, logger="flsec"):
        params, metrics = make(f=3, on_too_few="reduce_f").aggregate_fit(1, results, [])
    assert "n=9, f=3; on_too_few='reduce_f': using f=1" in caplog.text  # needs 15; 9 allow 1
    assert metrics["f_used"] == 1
    np.testing.assert_allclose(
        flat(parameters_to_ndarrays(params)), bulyan(torch.from_numpy(updates), 1).update.numpy()
    )
    with caplog.at_level(logging.WARNING, logger="flsec"):  # f=0 would be the mean
        params, metrics = make(f=1, on_too_few="reduce_f").aggregate_fit(1, results[:5], [])
    assert "using f=0" in caplog.text and metrics["f_used"] == 0
    median = coordinate_median(torch.from_numpy(updates[:5])).update.numpy()
    np.testing.assert_allclose(flat(parameters_to_ndarrays(params)), median)


def test_strategy_rejects_a_bad_f():
    with pytest.raises(ValueError, match="f must be"):
        Bulyan(f=-2)
