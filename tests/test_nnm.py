import logging

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from flsec_flower.aggregation import Aggregate, RoundContext
from flsec_flower.app.registry import build_strategy
from flsec_flower.config import ConfigError, StrategyConfig, WrapperConfig
from strategies import NNM, Bucketing, FedAvg, RobustStrategy
from strategies._linalg import gram, inner_products, sq_distances
from strategies._too_few import TooFewClientsError
from strategies.nnm import nearest_neighbour_mixing


def ctx_for(n):
    return RoundContext(
        server_round=1,
        partition_ids=list(range(n)),
        num_examples=torch.ones(n),
        global_params=torch.zeros(1),
        generator=torch.Generator().manual_seed(0),
    )


class PickFirst(RobustStrategy):
    """Inner rule that returns row 0 and flags the last row."""

    def aggregate_updates(self, updates, ctx):
        n = updates.shape[0]
        return Aggregate(update=updates[0].clone(), selected=[0], flagged=[n - 1])


def test_mixing_by_hand():
    u = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 10.0]])
    # n - f = 2: each row and its nearest other row
    # row 0 -> row 1 (d=1); row 1 -> row 0; row 2 -> row 0 (d=4 < 5); row 3 -> row 2 (d=164 < 181)
    expected = torch.tensor([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0], [5.0, 6.0]])
    assert torch.allclose(nearest_neighbour_mixing(u, f=2), expected)
    # f = 0: every row becomes the mean
    assert torch.allclose(nearest_neighbour_mixing(u, f=0), u.mean(dim=0).expand(4, 2))


def test_mixing_matches_a_loop_over_cdist():
    rng = np.random.default_rng(0)
    u = torch.from_numpy(rng.normal(size=(9, 5)).astype(np.float32))
    f = 3
    dist = torch.cdist(u.double(), u.double())
    expected = torch.stack([u[dist[i].argsort()[: 9 - f]].mean(dim=0) for i in range(9)])
    assert torch.allclose(nearest_neighbour_mixing(u, f), expected, atol=1e-6)


def test_distances_and_chunked_inner_products():
    rng = np.random.default_rng(1)
    u = torch.from_numpy(rng.normal(size=(6, 23)).astype(np.float32))
    dist = sq_distances(gram(u, chunk=5))
    assert torch.allclose(dist, torch.cdist(u.double(), u.double()) ** 2, atol=1e-5)
    whole = inner_products(u)
    assert torch.allclose(inner_products(u, chunk=4), whole)
    assert torch.allclose(whole, u.double() @ u.double().T)
    huge = torch.tensor([[1e30, 0.0], [0.0, 1.0]])
    assert torch.isfinite(inner_products(huge)).all()


def test_duplicate_rows_keep_themselves():
    u = torch.tensor([[1.0], [1.0], [1.0], [5.0]])
    mixed = nearest_neighbour_mixing(u, f=3)  # only the row itself
    assert torch.equal(mixed, u)


def test_huge_rows_do_not_reach_honest_mixes():
    u = torch.ones((5, 4))
    u[4] = 1e30
    mixed = nearest_neighbour_mixing(u, f=1)
    assert torch.isfinite(mixed).all()
    assert torch.allclose(mixed[:4], torch.ones((4, 4)))
    assert torch.isfinite(nearest_neighbour_mixing(u, f=0)).all()


def test_wrapper_composes_with_mean_and_keeps_row_identity():
    rng = np.random.default_rng(2)
    u = torch.from_numpy(rng.normal(size=(6, 3)).astype(np.float32))
    agg = NNM(FedAvg(weighted=False, device="cpu"), f=2, device="cpu").aggregate_updates(
        u, ctx_for(6)
    )
    assert torch.allclose(agg.update, nearest_neighbour_mixing(u, 2).mean(dim=0))
    picked = NNM(PickFirst(device="cpu"), f=2, device="cpu").aggregate_updates(u, ctx_for(6))
    assert torch.allclose(picked.update, nearest_neighbour_mixing(u, 2)[0])
    assert (picked.selected, picked.flagged) == ([0], [5])


def test_nnm_then_bucketing_compose():
    u = torch.ones((4, 2))
    u[3] = 1e30
    inner = NNM(FedAvg(weighted=False, device="cpu"), f=1, device="cpu")
    agg = Bucketing(inner, s=2, device="cpu").aggregate_updates(u, ctx_for(4))
    assert torch.isfinite(agg.update).all()


def test_f_too_large_is_lowered_with_a_warning(caplog):
    u = torch.tensor([[0.0], [4.0]])
    with pytest.raises(TooFewClientsError, match="NNM needs n > f but n=2, f=5"):
        NNM(FedAvg(weighted=False, device="cpu"), f=5, device="cpu").aggregate_updates(
            u, ctx_for(2)
        )
    wrapped = NNM(FedAvg(weighted=False, device="cpu"), f=5, on_too_few="reduce_f", device="cpu")
    with caplog.at_level(logging.WARNING, logger="flsec"):
        agg = wrapped.aggregate_updates(u, ctx_for(2))
    assert torch.allclose(agg.update, u.mean(dim=0))
    assert "using f=1" in caplog.text and agg.metrics == {"nnm_f_used": 1}
    with pytest.raises(ValueError, match="f"):
        nearest_neighbour_mixing(u, f=2)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True])
def test_bad_f_raises(bad):
    with pytest.raises(ValueError, match="f must"):
        NNM(FedAvg(device="cpu"), f=bad, device="cpu")
    cfg = StrategyConfig(name="fedavg", wrappers=[WrapperConfig("nnm", {"f": bad})])
    with pytest.raises(ConfigError, match="f must"):
        build_strategy(cfg, device="cpu")


def test_aggregate_fit_with_selection_by_partition_id():
    init = [np.zeros(2, np.float32)]
    strategy = NNM(
        PickFirst(device="cpu"), f=1, device="cpu", initial_parameters=ndarrays_to_parameters(init)
    )
    strategy.initialize_parameters(None)
    rows = {7: [0.0, 0.0], 3: [1.0, 0.0], 9: [0.0, 1.0]}
    results = [
        (
            None,
            FitRes(
                Status(Code.OK, ""),
                ndarrays_to_parameters([np.array(v, np.float32)]),
                1,
                {"partition_id": pid},
            ),
        )
        for pid, v in rows.items()
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    diag = strategy.diagnostics[1]
    assert diag.partition_ids == [3, 7, 9]  # rows sorted by partition id
    assert (diag.selected, diag.flagged) == ([3], [9])
    # row of partition 3 = [1, 0]; its nearest other row is partition 7's [0, 0]
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], [0.5, 0.0])
