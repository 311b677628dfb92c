import logging

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

import strategies.rlr as rlr_module
from flsec_flower.aggregation import RoundContext
from flsec_flower.app.registry import build_strategy
from flsec_flower.config import ConfigError, StrategyConfig, WrapperConfig
from strategies import FedAvg, NormClip, RobustLR
from strategies.norm_clip import clip_norms
from strategies.rlr import robust_lr, sign_agreement_mask

U3 = torch.tensor(
    [
        [1.0, -1.0, 2.0, 0.0],
        [3.0, 1.0, -1.0, 0.0],
        [0.5, -2.0, -3.0, 1.0],
    ]
)


def ctx_for(n):
    return RoundContext(
        server_round=1,
        partition_ids=list(range(n)),
        num_examples=torch.ones(n),
        global_params=torch.zeros(1),
        generator=torch.Generator().manual_seed(0),
    )


def test_sign_mask_three_rows_by_hand():
    # sign sums per coordinate: 3, -1, -1, 1
    assert sign_agreement_mask(U3, theta=3).tolist() == [1.0, -1.0, -1.0, -1.0]
    assert sign_agreement_mask(U3, theta=1).tolist() == [1.0, 1.0, 1.0, 1.0]
    assert sign_agreement_mask(U3, theta=2).tolist() == [1.0, -1.0, -1.0, -1.0]


def test_mask_matches_an_independent_numpy_formula():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(9, 50)).astype(np.float32)
    u[:, :5] = 0.0
    expected = np.where(np.abs(np.sign(u).sum(axis=0)) >= 4, 1.0, -1.0)
    np.testing.assert_array_equal(sign_agreement_mask(torch.from_numpy(u), 4).numpy(), expected)


def test_blocks_of_columns_give_the_same_mask(monkeypatch):
    rng = np.random.default_rng(1)
    u = torch.from_numpy(rng.normal(size=(5, 37)).astype(np.float32))
    whole = sign_agreement_mask(u, 3)
    monkeypatch.setattr(rlr_module, "_BLOCK_ELEMENTS", 7)
    assert torch.equal(sign_agreement_mask(u, 3), whole)


def test_wrapper_masks_the_inner_mean():
    wrapped = RobustLR(FedAvg(weighted=False, device="cpu"), theta=3, device="cpu")
    agg = wrapped.aggregate_updates(U3, ctx_for(3))
    mean = U3.mean(dim=0)
    assert torch.allclose(agg.update, torch.tensor([1.0, -1.0, -1.0, -1.0]) * mean)
    assert torch.allclose(robust_lr(U3, mean, 3), agg.update)
    assert agg.selected == [0, 1, 2]


def test_with_eta_as_server_lr_the_step_is_the_papers_update():
    rng = np.random.default_rng(2)
    glob = rng.normal(size=6).astype(np.float32)
    u = rng.normal(size=(5, 6)).astype(np.float32)
    eta, theta = 0.7, 3
    strategy = RobustLR(
        FedAvg(weighted=False, device="cpu"),
        theta=theta,
        server_lr=eta,
        device="cpu",
        initial_parameters=ndarrays_to_parameters([glob]),
    )
    strategy.initialize_parameters(None)
    results = [
        (
            None,
            FitRes(
                Status(Code.OK, ""), ndarrays_to_parameters([glob + u[i]]), 1, {"partition_id": i}
            ),
        )
        for i in range(5)
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    # Ozdayi et al.: x <- x + eta_theta * mean(u), eta_theta = +-eta by sign agreement
    eta_theta = np.where(np.abs(np.sign(u).sum(axis=0)) >= theta, eta, -eta)
    expected = glob + eta_theta * u.mean(axis=0)
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], expected, rtol=1e-5, atol=1e-6)
    assert strategy.diagnostics[1].selected == [0, 1, 2, 3, 4]


def test_signs_are_taken_after_an_inner_pre_transform():
    # NormClip inside RobustLR: clipping keeps signs, so the mask is the same
    u = U3.clone()
    u[0] *= 1e30
    wrapped = RobustLR(
        NormClip(FedAvg(weighted=False, device="cpu"), max_norm=1.0, device="cpu"),
        theta=3,
        device="cpu",
    )
    agg = wrapped.aggregate_updates(u, ctx_for(3))
    assert torch.isfinite(agg.update).all()
    expected = sign_agreement_mask(U3, 3) * clip_norms(u, 1.0).mean(dim=0)
    assert torch.allclose(agg.update, expected)


@pytest.mark.parametrize("theta", [0, -1, float("nan"), float("inf"), "4", True])
def test_bad_theta_raises(theta):
    with pytest.raises(ValueError, match="theta"):
        RobustLR(FedAvg(device="cpu"), theta=theta, device="cpu")


def test_registry_builds_rlr_and_reports_bad_theta():
    cfg = StrategyConfig(name="fedavg", wrappers=[WrapperConfig("rlr", {"theta": 2})])
    strategy = build_strategy(cfg, device="cpu")
    assert isinstance(strategy, RobustLR) and strategy.theta == 2.0
    assert RobustLR(FedAvg(device="cpu"), device="cpu").theta == 4.0
    bad = StrategyConfig(name="fedavg", wrappers=[WrapperConfig("rlr", {"theta": -1})])
    with pytest.raises(ConfigError, match="theta"):
        build_strategy(bad, device="cpu")


def test_fewer_clients_than_theta_negates_everything_with_a_warning(caplog):
    wrapped = RobustLR(FedAvg(weighted=False, device="cpu"), theta=4, device="cpu")
    with caplog.at_level(logging.WARNING, logger="flsec"):
        agg = wrapped.aggregate_updates(U3, ctx_for(3))
    assert torch.allclose(agg.update, -U3.mean(dim=0))
    assert "theta=4" in caplog.text
