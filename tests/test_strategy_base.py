import numpy as np
import pytest
import torch
from flwr.common import parameters_to_ndarrays
from flwr.server.strategy import FedAvg as FlowerFedAvg

from strategies import FedAvg
from strategies.base import TooFewClientsError
from strategies.fedavg import mean

SHAPES = [(3, 2), (2,)]


def arrays(rng, scale=1.0):
    return [rng.normal(size=s).astype(np.float32) * scale for s in SHAPES]


@pytest.fixture
def make(initialised_strategy):
    """``make(init=None, **kwargs)``: our FedAvg, from zeros unless ``init`` is given."""

    def build(init=None, **kwargs):
        init = init or [np.zeros(s, np.float32) for s in SHAPES]
        return initialised_strategy(FedAvg, init, **kwargs)

    return build


def test_fedavg_equals_flower_fedavg(fit_res, make):
    rng = np.random.default_rng(0)
    init = arrays(rng)
    results = [fit_res(arrays(rng), i, int(n)) for i, n in enumerate(rng.integers(1, 100, 6))]
    ours, _ = make(init=init, device="cpu").aggregate_fit(1, results, [])
    theirs, _ = FlowerFedAvg().aggregate_fit(1, results, [])
    for a, b in zip(parameters_to_ndarrays(ours), parameters_to_ndarrays(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_mean_weighted_by_hand():
    u = torch.tensor([[0.0, 2.0], [2.0, 4.0]])
    assert torch.allclose(mean(u, torch.tensor([1.0, 3.0])).update, torch.tensor([1.5, 3.5]))
    assert torch.allclose(mean(u).update, torch.tensor([1.0, 3.0]))


def test_server_lr_scales_the_step(fit_res, make):
    rng = np.random.default_rng(1)
    results = [fit_res(arrays(rng), i, 1) for i in range(3)]
    full, _ = make(device="cpu", weighted=False).aggregate_fit(1, results, [])
    half, _ = make(device="cpu", weighted=False, server_lr=0.5).aggregate_fit(1, results, [])
    for a, b in zip(parameters_to_ndarrays(full), parameters_to_ndarrays(half), strict=True):
        np.testing.assert_allclose(a * 0.5, b, rtol=1e-6)


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (lambda p: [np.full_like(p[0], np.nan), p[1]], "non-finite"),
        (lambda p: [p[0], np.full_like(p[1], np.inf)], "non-finite"),
        (lambda p: [p[0].reshape(2, 3), p[1]], "shape"),
        (lambda p: p[:1], "expected 2 arrays"),
    ],
)
def test_invalid_updates_are_rejected_not_aggregated(bad, reason, fit_res, make):
    rng = np.random.default_rng(2)
    honest = [arrays(rng) for _ in range(3)]
    results = [fit_res(p, i) for i, p in enumerate(honest)]
    results.append(fit_res(bad(arrays(rng)), 7))
    strategy = make(device="cpu")
    params, metrics = strategy.aggregate_fit(1, results, [])
    out = parameters_to_ndarrays(params)
    expected = [np.mean([h[k] for h in honest], axis=0) for k in range(len(SHAPES))]
    for a, b in zip(out, expected, strict=True):
        assert np.isfinite(a).all()
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert metrics["num_rejected"] == 1
    diag = strategy.diagnostics[1]
    assert diag.rejected[0].partition_id == 7 and reason in diag.rejected[0].reason
    assert diag.partition_ids == [0, 1, 2]


def test_non_positive_sample_count_rejected(fit_res, make):
    rng = np.random.default_rng(3)
    results = [fit_res(arrays(rng), 0, 5), fit_res(arrays(rng), 1, 0), fit_res(arrays(rng), 2, -3)]
    strategy = make(device="cpu")
    _, metrics = strategy.aggregate_fit(1, results, [])
    assert metrics["num_rejected"] == 2


def test_all_rejected_keeps_global_model(fit_res, make):
    results = [fit_res([np.full(s, np.nan, np.float32) for s in SHAPES], i, 5) for i in range(2)]
    strategy = make(device="cpu")
    params, metrics = strategy.aggregate_fit(1, results, [])
    assert params is None and metrics["num_rejected"] == 2
    assert strategy.diagnostics[1].skipped == "no valid update"
    assert torch.count_nonzero(strategy.global_params) == 0


def test_overflowing_aggregate_keeps_global_model(fit_res, make):
    big = [np.full(s, 3e38, np.float32) for s in SHAPES]
    results = [fit_res(big, 0, 1), fit_res(big, 1, 1)]
    strategy = make(device="cpu", weighted=False, server_lr=10.0)
    params, _ = strategy.aggregate_fit(1, results, [])
    assert params is None
    assert torch.isfinite(strategy.global_params).all()
    assert strategy.diagnostics[1].skipped == "non-finite aggregate"


def test_rows_sorted_by_partition_and_listener_gets_diagnostics(fit_res, make):
    rng = np.random.default_rng(5)
    results = [fit_res(arrays(rng), pid, 1) for pid in (4, 1, 3)]
    strategy = make(device="cpu")
    seen = {}
    strategy.round_listener = lambda r, rec: seen.update({r: rec})
    strategy.evaluate_fn = lambda r, p, c: (0.5, {"accuracy": 0.9})
    params, _ = strategy.aggregate_fit(1, results, [])
    strategy.evaluate(1, params)
    assert seen[1]["participants"] == [1, 3, 4]
    assert seen[1]["selected"] == [1, 3, 4]
    assert seen[1]["accuracy"] == 0.9 and seen[1]["loss"] == 0.5


def test_weighted_is_refused_by_rules_that_ignore_weights():
    from flsec_flower.app.registry import build_strategy
    from flsec_flower.config import ConfigError, StrategyConfig

    assert build_strategy(StrategyConfig("krum", {"f": 1, "weighted": True}), device="cpu").weighted
    with pytest.raises(ConfigError, match=r"strategy\.params.*does not weight"):
        build_strategy(StrategyConfig("median", {"weighted": True}), device="cpu")


def test_round_where_every_client_failed_is_an_error(make):
    strategy = make(device="cpu")
    with pytest.raises(TooFewClientsError, match=r"0 client\(s\) replied, 2 failed"):
        strategy.aggregate_fit(1, [], [ValueError("boom"), ValueError("boom")])
