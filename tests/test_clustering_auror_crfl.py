"""Cosine clustering, Auror and CRFL: hand-computed rounds and each paper's property."""

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from scipy.stats import norm

from flsec_flower.aggregation import RoundContext
from strategies import CRFL, Auror, CosineClustering
from strategies.auror import auror, column_two_means
from strategies.clustering import cosine_clustering
from strategies.crfl import contraction, crfl


def ctx_for(n, global_params=None, seed=0, server_round=1):
    return RoundContext(
        server_round=server_round,
        partition_ids=list(range(n)),
        num_examples=torch.arange(1, n + 1, dtype=torch.float32),
        global_params=torch.zeros(2) if global_params is None else global_params,
        generator=torch.Generator().manual_seed(seed),
    )


# --------------------------------------------------------------- clustering
def test_clustering_by_hand_and_tie():
    u = torch.tensor([[2.0, 0.0], [1.0, 0.1], [1.0, -0.1], [-1.0, -3.0], [-1.0, -2.5]])
    # cosine distances: rows 0-2 are within .02 of each other, rows 3-4 within .003, and
    # the groups 1.2 to 1.4 apart; average linkage merges within groups first and stops at
    # two clusters: {0, 1, 2} (the larger, kept) and {3, 4}
    agg = cosine_clustering(u)
    assert (agg.selected, agg.flagged) == ([0, 1, 2], [3, 4])
    assert torch.allclose(agg.update, torch.tensor([4.0 / 3.0, 0.0]))
    tie = cosine_clustering(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # no majority: all kept
    assert (tie.selected, tie.flagged, tie.update.tolist()) == ([0, 1], [], [0.5, 0.5])


def test_clustering_separates_a_minority_direction_whatever_its_magnitude():
    # Sattler et al.: cosine similarity separates updates by direction, not norm
    rng = np.random.default_rng(1)
    honest = rng.normal(loc=1.0, scale=0.3, size=(7, 50))
    bad = -1e6 * honest[:3]
    u = torch.tensor(np.concatenate([bad, honest]), dtype=torch.float32)
    agg = CosineClustering(device="cpu").aggregate_updates(u, ctx_for(10))
    assert agg.flagged == [0, 1, 2]
    assert np.allclose(agg.update.numpy(), honest.mean(0), atol=1e-5)


# -------------------------------------------------------------------- Auror
def test_column_two_means_is_the_best_cut():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 5))
    low, high, threshold = column_two_means(torch.tensor(x, dtype=torch.float32))
    for k in range(5):
        v = np.sort(x[:, k].astype(np.float32).astype(np.float64))
        costs = [v[:c].var() * c + v[c:].var() * (7 - c) for c in range(1, 7)]
        c = int(np.argmin(costs)) + 1
        assert (low[k], high[k], threshold[k]) == pytest.approx(
            (v[:c].mean(), v[c:].mean(), v[c - 1])
        )


def test_auror_by_hand():
    u = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, 0.0], [0.0, 0.1, 0.0], [1.0, 1.0, 0.1]])
    # column 0: clusters {0, .1, 0} and {1}: centres .0333 and 1, indicative for alpha = .5,
    # minority {3}; column 1 likewise; column 2: centres 0 and .1, not indicative;
    # row 3 is suspicious in 2 of 2 indicative columns (> tau = .5): flagged
    agg = auror(u, alpha=0.5, tau=0.5)
    assert agg.metrics["auror_indicative"] == 2
    assert agg.scores.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert (agg.selected, agg.flagged) == ([0, 1, 2], [3])
    assert torch.allclose(agg.update, torch.tensor([0.1 / 3, 0.1 / 3, 0.0]))
    assert auror(u, alpha=2.0).flagged == []  # nothing indicative: plain mean


def test_auror_flags_targeted_poisoners_on_their_indicative_features():
    # Shen et al.: poisoned updates differ from the honest ones on a few indicative features
    rng = np.random.default_rng(2)
    u = rng.normal(scale=0.05, size=(13, 100))
    u[:3, :10] += 1.0
    agg = Auror(alpha=0.5, device="cpu").aggregate_updates(
        torch.tensor(u, dtype=torch.float32), ctx_for(13)
    )
    assert agg.flagged == [0, 1, 2]
    assert agg.metrics["auror_indicative"] == 10
    assert np.allclose(agg.update.numpy(), u[3:].mean(0), atol=1e-6)


# --------------------------------------------------------------------- CRFL
def test_crfl_by_hand_with_a_global_model_and_weights():
    g = torch.tensor([1.0, 0.0])
    u = torch.tensor([[2.0, 0.0], [5.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    # weights 1, 2: mean update 4; new model [5, 0] of norm 5 clipped to 1.5: update -0.5
    agg = crfl(u, g, gen, clip=1.5, sigma=0.0, weights=torch.tensor([1.0, 2.0]))
    assert agg.update.tolist() == pytest.approx([0.5, 0.0])
    assert agg.metrics["crfl_model_norm"] == pytest.approx(5.0)
    # a model inside the bound is not clipped
    agg = crfl(u, g, torch.Generator().manual_seed(0), clip=10.0, sigma=0.0)
    assert agg.update.tolist() == pytest.approx([3.5, 0.0])


def test_crfl_noise_is_seeded_gaussian_of_sigma():
    u = torch.zeros((3, 20_000))
    a = crfl(u, torch.zeros(20_000), torch.Generator().manual_seed(5), clip=1e9, sigma=0.1)
    b = crfl(u, torch.zeros(20_000), torch.Generator().manual_seed(5), clip=1e9, sigma=0.1)
    assert torch.equal(a.update, b.update)
    assert float(a.update.std()) == pytest.approx(0.1, rel=0.03)
    assert abs(float(a.update.mean())) < 0.005


def test_contraction_matches_the_normal_cdf():
    for rho, sigma in [(2.0, 0.01), (0.5, 1.0), (1.0, 3.0)]:
        assert contraction(rho, sigma) == pytest.approx(2 * norm.cdf(rho / sigma) - 1)


def test_crfl_keeps_every_global_model_within_the_growing_bound():
    # the property CRFL's certificate rests on: after each round ||w_t|| <= rho_t
    # (without noise), whatever the clients send
    strategy = CRFL(
        clip=0.5,
        clip_growth=0.25,
        sigma=0.0,
        device="cpu",
        initial_parameters=ndarrays_to_parameters([np.zeros(4, np.float32)]),
    )
    strategy.initialize_parameters(None)
    rng = np.random.default_rng(0)
    for t in range(1, 6):
        rows = rng.normal(scale=10.0, size=(5, 4)).astype(np.float32)
        results = [
            (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters([r]), 1, {"partition_id": i}))
            for i, r in enumerate(rows)
        ]
        params, metrics = strategy.aggregate_fit(t, results, [])
        model = parameters_to_ndarrays(params)[0]
        assert np.linalg.norm(model) <= 0.5 + 0.25 * t + 1e-5
        assert metrics["crfl_clip"] == 0.5 + 0.25 * t
