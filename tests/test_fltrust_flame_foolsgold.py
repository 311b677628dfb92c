import numpy as np
import pytest
import torch
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from sklearn.metrics.pairwise import cosine_distances, cosine_similarity

from flsec_flower.aggregation import RoundContext
from flsec_flower.app.registry import build_strategy
from flsec_flower.config import ConfigError, StrategyConfig
from strategies import Flame, FLTrust, FoolsGold
from strategies.flame import flame, majority_cluster, model_cosine_distances
from strategies.fltrust import fltrust
from strategies.foolsgold import foolsgold_weights, weighted_mean


def ctx_for(n, seed=0, global_params=None, trainer=None, pids=None):
    return RoundContext(
        server_round=1,
        partition_ids=list(range(n)) if pids is None else pids,
        num_examples=torch.ones(n),
        global_params=torch.zeros(2) if global_params is None else global_params,
        generator=torch.Generator().manual_seed(seed),
        local_trainer=trainer,
    )


@pytest.fixture
def fit_results(fit_res):
    """``fit_results(rows, pids=None)``: one reply per flat row, partition ids 0.. by default."""

    def build(rows, pids=None):
        pids = list(range(len(rows))) if pids is None else pids
        return [fit_res(r, pid) for r, pid in zip(rows, pids, strict=True)]

    return build


@pytest.fixture
def built(initialised_strategy):
    """``built(strategy_cls, d, **kwargs)``: the strategy from a zero model of ``d`` weights."""
    return lambda cls, d, **kw: initialised_strategy(cls, [np.zeros(d, np.float32)], **kw)


# ------------------------------------------------------------------ FLTrust
def test_fltrust_by_hand():
    u = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0], [0.0, 0.0]])
    agg = fltrust(u, torch.tensor([3.0, 4.0]))  # ||g0|| = 5
    # trust: cos = 3/5, 4/5, -3/5 -> 0, zero row -> 0
    assert agg.scores.tolist() == pytest.approx([0.6, 0.8, 0.0, 0.0])
    # rescaled rows: [5, 0] and [0, 5]; weighted mean (0.6*[5,0] + 0.8*[0,5]) / 1.4
    assert torch.allclose(agg.update, torch.tensor([3.0 / 1.4, 4.0 / 1.4]))
    assert (agg.selected, agg.flagged) == ([0, 1], [2, 3])


def test_fltrust_matches_an_independent_numpy_version():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(8, 20))
    g0 = rng.normal(size=20)
    cos = u @ g0 / (np.linalg.norm(u, axis=1) * np.linalg.norm(g0))
    ts = np.maximum(cos, 0)
    scaled = u * (np.linalg.norm(g0) / np.linalg.norm(u, axis=1))[:, None]
    expected = (ts[:, None] * scaled).sum(axis=0) / ts.sum()
    agg = fltrust(torch.tensor(u, dtype=torch.float32), torch.tensor(g0, dtype=torch.float32))
    np.testing.assert_allclose(agg.update.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_fltrust_huge_rows_are_rescaled_and_no_trust_keeps_the_model():
    u = torch.tensor([[1e30, 1e30], [1.0, 0.5]])
    agg = fltrust(u, torch.tensor([1.0, 1.0]))
    assert torch.isfinite(agg.update).all()
    assert float(agg.update.norm()) <= 2**0.5 + 1e-5
    none = fltrust(-u, torch.tensor([1.0, 1.0]))
    assert torch.equal(none.update, torch.zeros(2)) and none.flagged == [0, 1]


def test_fltrust_strategy_uses_the_root_data_and_the_trainer(fit_results, built):
    seen = []

    def trainer(global_flat, x, y, server_round=1):
        seen.append((x, y))
        return x.sum(dim=0)  # server update [1, 1]

    with pytest.raises(RuntimeError, match="root_data"):
        built(FLTrust, 2, local_trainer=trainer).aggregate_fit(1, fit_results([[1.0, 1.0]]), [])
    root = (torch.eye(2), torch.tensor([0, 1]))
    strategy = built(FLTrust, 2, local_trainer=trainer, root_data=root)
    params, _ = strategy.aggregate_fit(1, fit_results([[2.0, 2.0], [-1.0, 0.0], [0.0, 3.0]]), [])
    assert seen and torch.equal(seen[-1][0], torch.eye(2))
    cos = 2**-0.5
    expected = (1.0 * np.array([1.0, 1.0]) + cos * np.array([0.0, 2**0.5])) / (1 + cos)
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], expected, rtol=1e-5)
    diag = strategy.diagnostics[1]
    assert (diag.selected, diag.flagged) == ([0, 2], [1])


def test_fltrust_registry_and_bad_root_size():
    assert build_strategy(StrategyConfig(name="fltrust"), device="cpu").root_size == 100
    with pytest.raises(ConfigError, match="root_size"):
        build_strategy(StrategyConfig(name="fltrust", params={"root_size": 0}), device="cpu")


# -------------------------------------------------------------------- FLAME
def test_model_cosine_distances_match_sklearn_on_local_models():
    rng = np.random.default_rng(1)
    u = rng.normal(size=(6, 10)).astype(np.float32)
    g = rng.normal(size=10).astype(np.float32)
    ours = model_cosine_distances(torch.from_numpy(u), torch.from_numpy(g))
    np.testing.assert_allclose(ours, cosine_distances(u + g), atol=1e-6)


def test_majority_cluster_keeps_the_big_group():
    rng = np.random.default_rng(2)
    honest = rng.normal(size=(7, 30)) * 0.1 + 1.0
    attackers = -np.ones((3, 30)) + rng.normal(size=(3, 30)) * 0.01
    u = np.concatenate([honest, attackers])
    assert majority_cluster(cosine_distances(u)) == list(range(7))
    assert majority_cluster(np.zeros((1, 1))) == [0]


def test_flame_clips_to_the_median_norm_by_hand():
    angle = np.array([0.0, 0.01, 0.02, 0.03, 0.04])  # a chain of close directions
    radius = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    honest = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    u = torch.tensor(np.vstack([honest, [[-50.0, 0.0]]]), dtype=torch.float32)
    agg = flame(u, torch.zeros(2), torch.Generator().manual_seed(0), noise_lambda=0.0)
    assert agg.selected == [0, 1, 2, 3, 4] and agg.flagged == [5]
    norms = np.linalg.norm(u.numpy(), axis=1)
    s = np.median(norms)  # over all six clients
    kept = u.numpy()[:5] * np.minimum(1.0, s / norms[:5])[:, None]
    np.testing.assert_allclose(agg.update.numpy(), kept.mean(axis=0), rtol=1e-5)


def test_flame_noise_is_lambda_times_median_and_seeded():
    rng = np.random.default_rng(3)
    u = torch.from_numpy((rng.normal(size=(6, 4000)) * 0.1 + 1.0).astype(np.float32))
    quiet = flame(u, torch.zeros(4000), torch.Generator().manual_seed(0), noise_lambda=0.0)
    loud = flame(u, torch.zeros(4000), torch.Generator().manual_seed(0), noise_lambda=0.01)
    again = flame(u, torch.zeros(4000), torch.Generator().manual_seed(0), noise_lambda=0.01)
    s = float(np.median(np.linalg.norm(u.numpy(), axis=1)))
    assert torch.equal(loud.update, again.update)
    assert float((loud.update - quiet.update).std()) == pytest.approx(0.01 * s, rel=0.05)


def test_flame_huge_attackers_stay_out_and_output_is_finite():
    u = torch.ones((7, 5)) + 0.01 * torch.arange(35, dtype=torch.float32).reshape(7, 5)
    u[5] = -1e30
    u[6] = 1e30 * torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0])
    strategy = Flame(device="cpu")
    agg = strategy.aggregate_updates(u, ctx_for(7, global_params=torch.zeros(5)))
    assert torch.isfinite(agg.update).all()
    assert {5, 6} <= set(agg.flagged) and len(agg.selected) >= 7 // 2 + 1


def test_flame_through_aggregate_fit_and_registry(fit_results):
    strategy = build_strategy(
        StrategyConfig(name="flame", params={"noise_lambda": 0.0}),
        device="cpu",
        initial_parameters=ndarrays_to_parameters([np.zeros(2, np.float32)]),
    )
    strategy.initialize_parameters(None)
    rows = [[1.0, 0.1], [1.0, -0.1], [1.0, 0.0], [-5.0, 0.0]]
    params, _ = strategy.aggregate_fit(1, fit_results(rows, pids=[3, 1, 2, 8]), [])
    diag = strategy.diagnostics[1]
    assert (diag.selected, diag.flagged) == ([1, 2, 3], [8])
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], [1.0, 0.0], atol=1e-6)
    with pytest.raises(ConfigError, match="noise_lambda"):
        build_strategy(StrategyConfig(name="flame", params={"noise_lambda": -1}), device="cpu")


# ---------------------------------------------------------------- FoolsGold
def reference_foolsgold(histories):
    """The authors' numpy code (DistributedML/FoolsGold, deep-fg/fg/foolsgold.py)."""
    n = histories.shape[0]
    cs = cosine_similarity(histories) - np.eye(n)
    maxcs = np.max(cs, axis=1)
    for i in range(n):
        for j in range(n):
            if i != j and maxcs[i] < maxcs[j]:
                cs[i][j] = cs[i][j] * maxcs[i] / maxcs[j]
    wv = 1 - np.max(cs, axis=1)
    wv[wv > 1] = 1
    wv[wv < 0] = 0
    wv = wv / np.max(wv)
    wv[wv == 1] = 0.99
    with np.errstate(divide="ignore"):
        wv = np.log(wv / (1 - wv)) + 0.5
    wv[(np.isinf(wv) + wv > 1)] = 1
    wv[wv < 0] = 0
    return wv


def test_foolsgold_weights_match_the_authors_code():
    rng = np.random.default_rng(4)
    for _ in range(5):
        h = rng.normal(size=(8, 12))
        h[5] = h[6] * 1.5 + rng.normal(size=12) * 0.01  # two sybils
        np.testing.assert_allclose(
            foolsgold_weights(torch.from_numpy(h)).numpy(), reference_foolsgold(h), atol=1e-9
        )


def test_foolsgold_by_hand_sybils_get_zero():
    h = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    assert foolsgold_weights(h).tolist() == [0.0, 0.0, 1.0, 1.0]
    assert foolsgold_weights(torch.ones(3, 2)).tolist() == [0.0, 0.0, 0.0]  # all identical
    assert foolsgold_weights(torch.ones(1, 2)).tolist() == [1.0]


def test_weighted_mean_and_all_zero_weights():
    u = torch.tensor([[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]])
    agg = weighted_mean(u, torch.tensor([1.0, 0.5, 0.0]))
    assert torch.allclose(agg.update, torch.tensor([5.0 / 3.0, 2.0 / 3.0]))
    assert (agg.selected, agg.flagged) == ([0, 1], [2])
    zero = weighted_mean(u, torch.zeros(3))
    assert torch.equal(zero.update, torch.zeros(2)) and zero.flagged == [0, 1, 2]


def test_foolsgold_keeps_histories_across_rounds_by_partition_id(fit_results, built):
    strategy = built(FoolsGold, 3)
    pids = [0, 1, 7, 8]
    sybil = [1.0, 1.0, 0.0]
    r1 = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], sybil, sybil])
    params, _ = strategy.aggregate_fit(1, fit_results(r1, pids=pids), [])
    assert strategy.diagnostics[1].flagged == [7, 8]
    # round 2: the sybils send different updates, but their histories stay alike
    r2 = np.array([[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.0, 0.0], [0.0, 0.2, 0.0]])
    new_global = parameters_to_ndarrays(params)[0]
    strategy.aggregate_fit(2, fit_results(r2 + new_global, pids=pids), [])
    for row, pid in enumerate(pids):
        torch.testing.assert_close(
            strategy.histories[pid], torch.tensor(r1[row] + r2[row], dtype=torch.float32)
        )
    expected = foolsgold_weights(torch.stack([strategy.histories[p] for p in pids]))
    selected = torch.tensor([p in strategy.diagnostics[2].selected for p in pids])
    assert torch.equal(expected > 0, selected)
    assert strategy.diagnostics[2].flagged == [7, 8]


def test_foolsgold_huge_rows_stay_finite():
    u = torch.eye(4)
    u[3] = 1e30
    agg = FoolsGold(device="cpu").aggregate_updates(u, ctx_for(4))
    assert torch.isfinite(agg.update).all()
    assert torch.isfinite(agg.scores).all()


def test_foolsgold_bad_kappa():
    with pytest.raises(ValueError, match="kappa"):
        FoolsGold(kappa=0.0, device="cpu")
