"""DnC and SignGuard: hand-computed rounds and the filtering property each paper states."""

import numpy as np
import pytest
import torch

from flsec_flower.aggregation import RoundContext
from flsec_flower.app.registry import build_strategy
from flsec_flower.config import ConfigError, StrategyConfig
from strategies import DnC, SignGuard
from strategies._too_few import TooFewClientsError
from strategies.dnc import dnc
from strategies.signguard import largest_meanshift_cluster, sign_features, signguard


def ctx_for(n, seed=0):
    return RoundContext(
        server_round=1,
        partition_ids=list(range(n)),
        num_examples=torch.ones(n),
        global_params=torch.zeros(2),
        generator=torch.Generator().manual_seed(seed),
    )


# ---------------------------------------------------------------------- DnC
ROWS = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 0.1], [0.0, -0.1], [10.0, 0.0]])


def test_dnc_by_hand():
    # mean (2, 0); centred x = (-3, -1, -2, -2, 8), y = (0, 0, .1, -.1, 0), x.y = 0, so the
    # top right singular vector is (1, 0) and the scores are x^2 = 9, 1, 4, 4, 64
    agg = dnc(ROWS, f=1, generator=torch.Generator().manual_seed(0))
    assert agg.scores.tolist() == pytest.approx([9.0, 1.0, 4.0, 4.0, 64.0])
    assert (agg.selected, agg.flagged) == ([0, 1, 2, 3], [4])
    assert torch.allclose(agg.update, torch.zeros(2), atol=1e-7)
    # f = 2 also removes the row of score 9: mean of (1, 0), (0, .1), (0, -.1)
    agg = dnc(ROWS, f=2, generator=torch.Generator().manual_seed(0))
    assert agg.flagged == [0, 4]
    assert torch.allclose(agg.update, torch.tensor([1.0 / 3.0, 0.0]))


def test_dnc_c_filters_a_fraction_of_f_and_iterations_intersect():
    agg = dnc(ROWS, f=2, generator=torch.Generator().manual_seed(0), c=0.5)
    assert agg.flagged == [4]  # floor(0.5 * 2) = 1 row per iteration
    agg = dnc(ROWS, f=1, generator=torch.Generator().manual_seed(0), iterations=3)
    assert agg.flagged == [4]  # every iteration sees all coordinates: the same row


@pytest.mark.parametrize("sub_dim", [500, 100])
def test_dnc_removes_attackers_that_share_a_direction(sub_dim):
    # the paper's premise: colluding malicious updates deviate along a common direction,
    # which becomes the top singular vector of the centred updates
    rng = np.random.default_rng(3)
    n, f, d = 15, 3, 500
    u = rng.normal(size=(n, d))
    direction = rng.normal(size=d)
    u[:f] += 30.0 * direction / np.linalg.norm(direction)
    agg = dnc(
        torch.tensor(u, dtype=torch.float32), f, torch.Generator().manual_seed(1), 1, 1.0, sub_dim
    )
    assert agg.flagged == [0, 1, 2]
    assert np.allclose(agg.update.numpy(), u[f:].mean(0), atol=1e-5)


def test_dnc_strategy_bound_and_validation():
    with pytest.raises(TooFewClientsError, match="n=2, f=2"):
        DnC(f=2, device="cpu").aggregate_updates(ROWS[:2], ctx_for(2))
    agg = DnC(f=2, on_too_few="reduce_f", device="cpu").aggregate_updates(ROWS[:2], ctx_for(2))
    assert agg.metrics["f_used"] == 1
    with pytest.raises(ConfigError, match=r"strategy.params: DnC rejected .*c must be"):
        build_strategy(StrategyConfig(name="dnc", params={"f": 1, "c": 2.0}), device="cpu")


# ---------------------------------------------------------------- SignGuard
def test_sign_features_are_max_scaled_shares():
    u = torch.tensor([[1.0, -1.0, 0.0, 2.0], [-1.0, -1.0, -1.0, 0.0]])
    # shares (+, 0, -): row 0 (.5, .25, .25), row 1 (0, .25, .75); column maxima .5, .25, .75
    assert sign_features(u, torch.arange(4)).tolist() == [[1.0, 1.0, 1 / 3], [0.0, 1.0, 1.0]]


def test_signguard_by_hand():
    u = torch.tensor([[1.0, 1.0], [1.2, 0.8], [0.8, 1.2], [0.05, 0.05], [10.0, 10.0], [3.0, 3.0]])
    # norms .0707, 1.414, 1.442, 1.442, 4.243, 14.14: median M = 1.442 = sqrt(2.08);
    # ratios .049 (< L = .1) and 9.8 (> R = 3) are dropped; every sign is +: one cluster;
    # [3, 3] is clipped to M: sqrt(1.04) (1, 1)
    agg = signguard(u, torch.Generator().manual_seed(0), coordinate_fraction=1.0)
    assert (agg.selected, agg.flagged) == ([0, 1, 2, 5], [3, 4])
    expected = (3.0 + np.sqrt(1.04)) / 4
    assert agg.update.tolist() == pytest.approx([expected, expected], rel=1e-6)
    assert float(agg.scores[4]) == pytest.approx(np.sqrt(200) / np.sqrt(2.08))


def test_signguard_filters_sign_flipped_updates_of_honest_norm():
    # the paper's point: sign flipping keeps the norms (the norm filter passes it) but
    # changes the sign statistics, which the Mean-Shift clustering separates
    rng = np.random.default_rng(0)
    honest = rng.normal(loc=0.5, size=(10, 400))
    u = np.concatenate([-honest[:3], honest])
    agg = signguard(torch.tensor(u, dtype=torch.float32), torch.Generator().manual_seed(2))
    assert agg.flagged == [0, 1, 2]
    assert np.dot(agg.update.numpy(), honest.mean(0)) > 0


def test_largest_cluster_keeps_everyone_when_features_are_equal():
    assert largest_meanshift_cluster(np.ones((4, 3))) == [0, 1, 2, 3]


def test_signguard_all_filtered_keeps_the_model():
    u = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])  # median norm 0: the non-zero row
    agg = signguard(u, torch.Generator().manual_seed(0), coordinate_fraction=1.0)
    assert agg.flagged == [2] and agg.update.tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="upper must be"):
        SignGuard(upper=0.5, device="cpu")
