"""Krum and Multi-Krum: hand-computed cases, Flower's aggregate_krum, precision, strategy."""

import logging

import numpy as np
import pytest
import torch
from flwr.common import parameters_to_ndarrays
from flwr.server.strategy.aggregate import aggregate_krum

from strategies import Krum, MultiKrum
from strategies._linalg import gram, sq_distances
from strategies._too_few import TooFewClientsError
from strategies.krum import krum

POINTS = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [10.0, 10.0]])


def test_five_points_by_hand():
    # n=5, f=1: each score sums the n-f-2=2 smallest squared distances to the others.
    # (0,0): 1+1   (1,0): 1+2   (0,1): 1+2   (2,2): 5+5   (10,10): 128+181
    agg = krum(POINTS, f=1)
    assert agg.selected == [0]
    assert torch.equal(agg.update, POINTS[0])
    assert agg.scores.tolist() == [2.0, 3.0, 3.0, 10.0, 309.0]


def test_multi_krum_by_hand():
    agg = krum(POINTS, f=1, m=3)
    assert agg.selected == [0, 1, 2]
    assert torch.allclose(agg.update, torch.tensor([1 / 3, 1 / 3]))
    default = krum(POINTS, f=1, m=None)  # n - f = 4 updates
    assert default.selected == [0, 1, 2, 3]
    assert torch.allclose(default.update, torch.tensor([0.75, 0.75]))
    weighted = krum(POINTS, f=1, m=2, weights=torch.tensor([1.0, 3.0, 5.0, 1.0, 1.0]))
    assert torch.allclose(weighted.update, torch.tensor([0.75, 0.0]))


def test_update_is_a_copy():
    agg = krum(POINTS, f=1)
    agg.update += 1
    assert torch.equal(POINTS[0], torch.zeros(2))


@pytest.mark.parametrize(
    ("n", "f", "m", "match"),
    [
        (4, 1, 1, "n=4, f=1"),
        (6, 2, 1, "n=6, f=2"),
        (5, -1, 1, "f must be"),
        (5, 1.5, 1, "f must be"),
        (5, 1, 0, "m must be"),
        (5, 1, 6, "m must be"),
    ],
)
def test_invalid_parameters(n, f, m, match):
    with pytest.raises(ValueError, match=match):
        krum(torch.zeros(n, 3), f=f, m=m)


def flower_results(updates, counts):
    """Flower's input: a list of (arrays, num_examples); each row split in two layers."""
    a = updates.numpy()
    return [
        ([a[i, :6].reshape(2, 3).copy(), a[i, 6:].copy()], int(c)) for i, c in enumerate(counts)
    ]


def flat(arrays):
    return np.concatenate([x.ravel() for x in arrays])


@pytest.mark.parametrize(("n", "f", "seed"), [(5, 1, 0), (9, 3, 1), (20, 4, 2), (31, 7, 3)])
def test_krum_equals_flower(n, f, seed):
    rng = np.random.default_rng(seed)
    u = torch.from_numpy(
        (rng.normal(size=(n, 40)) * rng.uniform(0.5, 3, (n, 1))).astype(np.float32)
    )
    counts = rng.integers(1, 100, n)
    ours = krum(u, f=f)
    theirs = flat(aggregate_krum(flower_results(u, counts), num_malicious=f, to_keep=0))
    assert np.array_equal(ours.update.numpy(), theirs)


@pytest.mark.parametrize(("n", "f", "m", "seed"), [(7, 1, 3, 0), (20, 4, 16, 1), (12, 2, 1, 2)])
def test_multi_krum_equals_flower(n, f, m, seed):
    """Flower's Multi-Krum averages the m best weighted by num_examples; ours with those weights.

    With equal counts Flower's average is our unweighted one.
    """
    rng = np.random.default_rng(seed)
    u = torch.from_numpy(rng.normal(size=(n, 40)).astype(np.float32))
    counts = rng.integers(1, 100, n)
    weighted = krum(u, f=f, m=m, weights=torch.tensor(counts, dtype=torch.float32))
    theirs = flat(aggregate_krum(flower_results(u, counts), num_malicious=f, to_keep=m))
    np.testing.assert_allclose(weighted.update.numpy(), theirs, rtol=1e-5, atol=1e-6)
    equal = flat(aggregate_krum(flower_results(u, np.ones(n)), num_malicious=f, to_keep=m))
    np.testing.assert_allclose(krum(u, f=f, m=m).update.numpy(), equal, rtol=1e-5, atol=1e-6)


def test_scores_equal_brute_force_float64():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(11, 300))
    d2 = ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1)
    expected = np.sort(d2 + np.diag(np.full(11, np.inf)), axis=1)[:, : 11 - 2 - 2].sum(1)
    agg = krum(torch.tensor(a, dtype=torch.float32), f=2)
    np.testing.assert_allclose(agg.scores.numpy(), expected, rtol=1e-5)
    assert agg.selected == [int(np.argmin(expected))]


def test_distances_precise_with_a_large_common_component():
    """Rows sharing a component 1000x their spread: the centred Gram keeps 1e-6 accuracy."""
    rng = np.random.default_rng(5)
    common = rng.normal(size=50_000) * 1000
    u = torch.tensor(common + rng.normal(size=(12, 50_000)), dtype=torch.float32)
    exact = torch.cdist(u.double(), u.double()) ** 2
    ours = sq_distances(gram(u))
    off = ~torch.eye(12, dtype=torch.bool)
    assert ((ours - exact).abs()[off] / exact[off]).max() < 1e-5


@pytest.mark.parametrize("huge", [1e30, 3e38, -1e30])
def test_huge_rows_give_finite_scores_and_an_honest_winner(huge):
    rng = np.random.default_rng(6)
    u = torch.from_numpy(rng.normal(size=(10, 30)).astype(np.float32))
    u[2] = huge
    u[7, :5] = -huge
    agg = krum(u, f=2)
    assert torch.isfinite(agg.scores).all()
    assert agg.selected[0] not in (2, 7)
    assert torch.isfinite(agg.update).all()


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(7)
    u = torch.from_numpy(rng.normal(size=(9, 1000)).astype(np.float32))
    whole = krum(u, f=2, m=4)
    chunked = krum(u, f=2, m=4, chunk=7)
    assert whole.selected == chunked.selected
    assert torch.allclose(whole.scores, chunked.scores, rtol=1e-6)


# ---------------------------------------------------------------- strategy
SHAPES = [(2, 3), (4,)]


def split(vector):
    return [vector[:6].reshape(2, 3), vector[6:]]


def test_krum_strategy_moves_to_the_chosen_client(fit_res, initialised_strategy):
    rng = np.random.default_rng(8)
    init = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    g = flat(init)
    updates = rng.normal(size=(7, 10)).astype(np.float32)
    updates[[1, 4]] = 50.0  # two attackers far away
    pids = [12, 3, 40, 7, 25, 9, 31]  # row i belongs to partition pids[i]
    results = [fit_res(split(g + updates[i]), pids[i]) for i in rng.permutation(7)]
    strategy = initialised_strategy(Krum, init, f=2)
    params, metrics = strategy.aggregate_fit(1, results, [])
    order = np.argsort(pids)  # the base sorts rows by partition id
    expected = krum(torch.from_numpy(updates[order]), f=2)
    chosen_pid = int(np.array(pids)[order][expected.selected[0]])
    assert strategy.diagnostics[1].selected == [chosen_pid]
    assert chosen_pid not in (pids[1], pids[4])
    new = flat(parameters_to_ndarrays(params))
    np.testing.assert_allclose(new, g + updates[pids.index(chosen_pid)], rtol=1e-6, atol=1e-6)
    assert metrics["num_results"] == 7


def test_multi_krum_strategy_selects_the_honest_clients(fit_res, initialised_strategy):
    rng = np.random.default_rng(9)
    init = [np.zeros(s, np.float32) for s in SHAPES]
    updates = rng.normal(size=(8, 10)).astype(np.float32)
    updates[[0, 5]] = -40.0
    results = [fit_res(split(updates[i]), 100 + i) for i in range(8)]
    strategy = initialised_strategy(MultiKrum, init, f=2)
    params, _ = strategy.aggregate_fit(1, results, [])
    assert sorted(strategy.diagnostics[1].selected) == [101, 102, 103, 104, 106, 107]
    expected = updates[[1, 2, 3, 4, 6, 7]].mean(0)
    np.testing.assert_allclose(flat(parameters_to_ndarrays(params)), expected, rtol=1e-5, atol=1e-6)


def test_multi_krum_strategy_weighted_like_flower(fit_res, initialised_strategy):
    rng = np.random.default_rng(10)
    init = [np.zeros(s, np.float32) for s in SHAPES]
    updates = rng.normal(size=(9, 10)).astype(np.float32)
    counts = rng.integers(1, 50, 9)
    results = [fit_res(split(updates[i]), i, int(counts[i])) for i in range(9)]
    params, _ = initialised_strategy(MultiKrum, init, f=2, m=5, weighted=True).aggregate_fit(
        1, results, []
    )
    flower_in = [(split(updates[i]), int(counts[i])) for i in range(9)]
    theirs = flat(aggregate_krum(flower_in, num_malicious=2, to_keep=5))
    np.testing.assert_allclose(flat(parameters_to_ndarrays(params)), theirs, rtol=1e-5, atol=1e-6)


def test_too_few_updates_fall_back_with_a_warning(caplog, fit_res, initialised_strategy):
    rng = np.random.default_rng(11)
    init = [np.zeros(s, np.float32) for s in SHAPES]
    updates = rng.normal(size=(5, 10)).astype(np.float32)
    results = [fit_res(split(updates[i]), i) for i in range(5)]
    with pytest.raises(TooFewClientsError, match=r"Krum needs n > 2f \+ 2 but n=5, f=3"):
        initialised_strategy(Krum, init, f=3).aggregate_fit(1, results, [])
    strategy = initialised_strategy(
        Krum, init, f=3, on_too_few="reduce_f"
    )  # needs n > 8; 5 allow f=1
    with caplog.at_level(logging.WARNING, logger="flsec"):
        params, metrics = strategy.aggregate_fit(1, results, [])
    assert "n=5, f=3; on_too_few='reduce_f': using f=1" in caplog.text
    assert metrics["f_used"] == 1 and strategy.diagnostics[1].as_record()["f_used"] == 1
    expected = krum(torch.from_numpy(updates), f=1)
    assert strategy.diagnostics[1].selected == expected.selected
    assert params is not None
    two = initialised_strategy(Krum, init, f=1, on_too_few="reduce_f")
    with caplog.at_level(logging.WARNING, logger="flsec"):
        params, metrics = two.aggregate_fit(1, results[:2], [])
    assert "no bound (fallback)" in caplog.text and metrics["f_used"] == 0
    np.testing.assert_allclose(flat(parameters_to_ndarrays(params)), updates[:2].mean(0), rtol=1e-6)
    _, metrics = initialised_strategy(MultiKrum, init, f=1).aggregate_fit(1, results, [])
    assert metrics["f_used"] == 1


@pytest.mark.parametrize(("cls", "kwargs"), [(Krum, {"f": -1}), (MultiKrum, {"f": 1, "m": 0})])
def test_strategy_rejects_bad_parameters(cls, kwargs):
    with pytest.raises(ValueError, match="must be"):
        cls(**kwargs)
