"""Coordinate-wise median and trimmed mean: by hand, against Flower, strategies."""

import logging

import numpy as np
import pytest
import torch
from flwr.common import parameters_to_ndarrays
from flwr.server.strategy import FedMedian, FedTrimmedAvg
from flwr.server.strategy.aggregate import aggregate_median, aggregate_trimmed_avg

from strategies import CoordinateMedian, TrimmedMean
from strategies._too_few import TooFewClientsError
from strategies.median import coordinate_median
from strategies.trimmed_mean import trimmed_mean


def test_median_by_hand():
    odd = torch.tensor([[3.0, -1.0], [1.0, 7.0], [2.0, 0.0]])
    assert torch.equal(coordinate_median(odd).update, torch.tensor([2.0, 0.0]))
    even = torch.tensor([[0.0, 5.0], [1.0, -1.0], [9.0, 2.0], [2.0, 100.0]])
    # even count: the mean of the two middle values (1, 2) and (2, 5)
    assert torch.equal(coordinate_median(even).update, torch.tensor([1.5, 3.5]))
    assert torch.equal(coordinate_median(odd[:1]).update, odd[0])


def test_median_of_extreme_values_does_not_overflow():
    u = torch.tensor([[3e38], [3e38], [-3e38], [3.2e38]])
    assert torch.isfinite(coordinate_median(u).update).all()
    assert coordinate_median(u).update.item() == pytest.approx(3e38, rel=1e-6)


def test_trimmed_mean_by_hand():
    u = torch.tensor([[0.0, 4.0], [1.0, -100.0], [2.0, 5.0], [3.0, 6.0], [100.0, 7.0]])
    # b=1: drop the smallest and largest per coordinate: (1+2+3)/3 and (5+6+4)/3
    assert torch.equal(trimmed_mean(u, b=1).update, torch.tensor([2.0, 5.0]))
    assert torch.equal(trimmed_mean(u, beta=0.2).update, torch.tensor([2.0, 5.0]))
    assert torch.allclose(trimmed_mean(u, b=0).update, u.mean(0))
    assert torch.equal(trimmed_mean(u, b=2).update, coordinate_median(u).update)


@pytest.mark.parametrize(
    ("n", "b", "beta", "match"),
    [
        (5, 1, 0.1, "exactly one"),
        (5, None, None, "exactly one"),
        (5, None, 0.5, "beta must be"),
        (5, None, -0.1, "beta must be"),
        (5, -1, None, "b must be"),
        (4, 2, None, "b=2 per side leaves nothing of n=4"),
    ],
)
def test_trimmed_mean_rejects_bad_parameters(n, b, beta, match):
    with pytest.raises(ValueError, match=match):
        trimmed_mean(torch.zeros(n, 3), b=b, beta=beta)


def flower_results(u):
    a = u.numpy()
    return [([a[i, :10].reshape(2, 5).copy(), a[i, 10:].copy()], 1) for i in range(a.shape[0])]


def flat(arrays):
    return np.concatenate([x.ravel() for x in arrays])


@pytest.mark.parametrize(("n", "seed"), [(1, 0), (2, 1), (7, 2), (10, 3), (33, 4)])
def test_median_equals_flower(n, seed):
    """Flower's aggregate_median is numpy's median: the same definition, bit for bit."""
    u = torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 50)).astype(np.float32))
    theirs = flat(aggregate_median(flower_results(u)))
    assert np.array_equal(coordinate_median(u).update.numpy(), theirs)


@pytest.mark.parametrize(
    ("n", "beta", "seed"), [(5, 0.2, 0), (10, 0.1, 1), (10, 0.25, 2), (31, 0.3, 3), (8, 0.0, 4)]
)
def test_trimmed_mean_equals_flower(n, beta, seed):
    """Flower's ``proportiontocut`` (FedTrimmedAvg's ``beta``) cuts ``int(beta * n)`` values
    from each end, scipy's convention: our ``beta`` means the same; ``b`` counts per side.
    """
    u = torch.from_numpy(np.random.default_rng(seed).normal(size=(n, 50)).astype(np.float32))
    theirs = flat(aggregate_trimmed_avg(flower_results(u), proportiontocut=beta))
    np.testing.assert_allclose(
        trimmed_mean(u, beta=beta).update.numpy(), theirs, rtol=1e-6, atol=1e-7
    )
    b = int(beta * n)
    np.testing.assert_allclose(trimmed_mean(u, b=b).update.numpy(), theirs, rtol=1e-6, atol=1e-7)


def test_chunks_do_not_change_the_result():
    u = torch.from_numpy(np.random.default_rng(5).normal(size=(12, 1001)).astype(np.float32))
    assert torch.equal(coordinate_median(u).update, coordinate_median(u, chunk=10).update)
    assert torch.equal(trimmed_mean(u, b=3).update, trimmed_mean(u, b=3, chunk=10).update)


def test_input_is_not_modified():
    u = torch.from_numpy(np.random.default_rng(6).normal(size=(6, 40)).astype(np.float32))
    before = u.clone()
    coordinate_median(u)
    trimmed_mean(u, b=1)
    assert torch.equal(u, before)


# ---------------------------------------------------------------- strategies
@pytest.fixture
def random_round(fit_res):
    """``random_round(seed, n=9)``: a global model and n replies of random weight."""

    def build(seed, n=9):
        rng = np.random.default_rng(seed)
        init = [rng.normal(size=(2, 5)).astype(np.float32), rng.normal(size=4).astype(np.float32)]
        models = [[a + rng.normal(size=a.shape).astype(np.float32) for a in init] for _ in range(n)]
        results = [fit_res(m, 50 - i, int(rng.integers(1, 99))) for i, m in enumerate(models)]
        return init, results

    return build


def test_median_strategy_equals_flower_fedmedian(random_round, initialised_strategy):
    init, results = random_round(7)
    ours, _ = initialised_strategy(CoordinateMedian, init).aggregate_fit(1, results, [])
    theirs, _ = FedMedian().aggregate_fit(1, results, [])
    for a, b in zip(parameters_to_ndarrays(ours), parameters_to_ndarrays(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.2, 0.34])
def test_trimmed_mean_strategy_equals_flower_fedtrimmedavg(
    beta, random_round, initialised_strategy
):
    init, results = random_round(8)
    ours, _ = initialised_strategy(TrimmedMean, init, beta=beta).aggregate_fit(1, results, [])
    theirs, _ = FedTrimmedAvg(beta=beta).aggregate_fit(1, results, [])
    for a, b in zip(parameters_to_ndarrays(ours), parameters_to_ndarrays(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_trimmed_mean_strategy_defaults_and_fallback(caplog, random_round, initialised_strategy):
    assert TrimmedMean().beta == 0.1
    init, results = random_round(9, n=4)
    with pytest.raises(TooFewClientsError, match="TrimmedMean needs n > 2b but n=4, b=3"):
        initialised_strategy(TrimmedMean, init, b=3).aggregate_fit(1, results, [])
    strategy = initialised_strategy(TrimmedMean, init, b=3, on_too_few="reduce_f")
    with caplog.at_level(logging.WARNING, logger="flsec"):
        params, metrics = strategy.aggregate_fit(1, results, [])
    assert "n=4, b=3; on_too_few='reduce_f': using b=1" in caplog.text
    assert metrics["f_used"] == 1
    median, _ = initialised_strategy(CoordinateMedian, init).aggregate_fit(1, results, [])
    for a, b in zip(parameters_to_ndarrays(params), parameters_to_ndarrays(median), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("kwargs", [{"b": 1, "beta": 0.1}, {"beta": 0.6}, {"b": -1}])
def test_trimmed_mean_strategy_rejects_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        TrimmedMean(**kwargs)
