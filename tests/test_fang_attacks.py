"""Fang et al.'s attacks on Krum and trimmed mean/median: hand cases and the paper's property."""

import math

import pytest
import torch

from clients import Fang, FangClient, fang_adversary
from clients.fang import (
    change_direction,
    fang_krum,
    fang_trimmed_mean,
    krum_lambda_bound,
    krum_selects_crafted,
)
from flsec_flower.aggregation import RoundContext
from strategies import Krum, TrimmedMean
from strategies.median import coordinate_median


def test_krum_bound_and_halving_by_hand():
    r = torch.tensor([[0.1], [-0.1], [0.3]])
    # m = 4, c = 1: one neighbour; nearest distances 0.2, 0.2, 0.2 -> min sum 0.2 over
    # (m - 2c - 1) sqrt(d) = 1, plus the largest norm 0.3: lambda_max = 0.5
    assert krum_lambda_bound(r, 1) == pytest.approx(0.5)
    s = change_direction(r)
    assert s.tolist() == [1.0]
    # -0.5 is 0.4 from -0.1 (score 0.16) while -0.1 has 0.2 to 0.1 (0.04): not selected;
    # -0.25 is 0.15 from -0.1 (0.0225 < 0.04): selected
    assert not krum_selects_crafted(r, s, 0.5, 1)
    assert krum_selects_crafted(r, s, 0.25, 1)
    assert fang_krum(r, 1).tolist() == [-0.25]


def test_trimmed_mean_attack_ranges_by_hand():
    r = torch.tensor([[1.0, -1.0, -2.0], [2.0, -3.0, 4.0]])
    # s = (+1, -1, +1): push below the minimum (1 > 0: [1/2, 1]; -2 <= 0: [-4, -2]) or
    # above the maximum (-1 <= 0: [-1, -1/2])
    u = fang_trimmed_mean(r, 50, torch.Generator().manual_seed(0))
    assert u.shape == (50, 3)
    for j, (lo, hi) in enumerate([(0.5, 1.0), (-1.0, -0.5), (-4.0, -2.0)]):
        assert bool(((u[:, j] >= lo) & (u[:, j] <= hi)).all()), j
    # partial knowledge: mean +- 3..4 std of the attackers' own updates (std sqrt(1/2), ...)
    p = fang_trimmed_mean(r, 50, torch.Generator().manual_seed(0), full_knowledge=False)
    mean, std = r.mean(0), r.std(0)
    assert bool((p[:, 0] <= mean[0] - 3 * std[0] + 1e-6).all())
    assert bool((p[:, 0] >= mean[0] - 4 * std[0] - 1e-6).all())
    assert bool((p[:, 1] >= mean[1] + 3 * std[1] - 1e-6).all())


def honest_round(k=16, d=40, seed=0, spread=1.0):
    # SGD-like updates: a common direction (+0.5) under larger per-client noise
    gen = torch.Generator().manual_seed(seed)
    return 0.5 + spread * torch.randn(k, d, generator=gen)


def ctx(n):
    return RoundContext(1, list(range(n)), torch.ones(n), torch.zeros(1), torch.Generator())


def test_fang_moves_krum_more_than_sign_flip():
    # the paper's property (Section 4, Table 2): on the same round Fang's attack deviates Krum
    # more than a naive attack: the selected update points against the honest direction.
    # 16 honest updates, 4 attackers.
    honest, c = honest_round(), 4
    mean = honest.mean(0)
    krum = Krum(f=c, device="cpu")
    flipped = torch.cat([-honest[:c], honest])  # sign flip: the attackers' own updates negated
    forged = torch.cat([fang_krum(honest, c).expand(c, -1), honest])
    clean = krum.aggregate_updates(flipped, ctx(20))
    attacked = krum.aggregate_updates(forged, ctx(20))
    assert clean.selected[0] >= c  # Krum discards the sign-flipped updates
    assert attacked.selected[0] < c  # and selects Fang's crafted update
    assert float(attacked.update @ mean) < 0 < float(clean.update @ mean)


@pytest.mark.parametrize("rule", ["trimmed_mean", "median"])
def test_fang_moves_trimmed_mean_and_median_against_the_change_direction(rule):
    honest, c = honest_round(spread=0.5), 4
    aggregate = (
        (lambda u: TrimmedMean(b=c, device="cpu").aggregate_updates(u, ctx(len(u))).update)
        if rule == "trimmed_mean"
        else (lambda u: coordinate_median(u).update)
    )
    base = aggregate(honest)
    s = change_direction(honest)
    fang = aggregate(torch.cat([fang_trimmed_mean(honest, c, torch.Generator()), honest]))
    flip = aggregate(torch.cat([-honest[:c], honest]))
    # every coordinate moves against s, and further than under sign flip on the whole
    assert bool(((fang - base) * s <= 1e-6).all())
    assert float(((base - fang) * s).sum()) > float(((base - flip) * s).sum()) > 0


def test_partial_knowledge_forges_from_the_attackers_own_updates():
    honest, c = honest_round(), 4
    u = torch.cat([honest[:c] * 0.0 + 1.0, honest])  # the attackers' own rows: all ones
    metrics = [{"attack_active": True}] * c + [{}] * len(honest)
    round_ctx = RoundContext(
        1,
        list(range(len(u))),
        torch.ones(len(u)),
        torch.zeros(1),
        torch.Generator(),
        metrics,
    )
    attackers = set(range(c))
    full = FangClient.build_adversary(attackers, agr="trimmed_mean")(u, round_ctx)
    partial = FangClient.build_adversary(attackers, agr="trimmed_mean", omniscient=False)(
        u, round_ctx
    )
    # own rows all equal: std 0, so the partial attack sends their mean exactly
    assert torch.equal(partial[:c], torch.ones(c, u.shape[1]))
    assert not torch.equal(full[:c], partial[:c])
    krum = FangClient.build_adversary(attackers, agr="krum", omniscient=False)(u, round_ctx)
    assert torch.allclose(krum[0], -krum_lambda_bound(u[:c], c) * torch.ones(u.shape[1]))
    assert math.isfinite(float(krum.abs().max()))


@pytest.mark.parametrize("omniscient", [True, False])
def test_a_message_api_adversary_is_the_simulations(omniscient):
    # fang_adversary (what a Message-API app builds from the Fang dataclass) forges exactly
    # as the simulation's adversary, the knowledge setting included
    honest, c = honest_round(), 3
    u = torch.cat([honest[:c] + 0.5, honest])
    metrics = [{"attack_active": True}] * c + [{}] * len(honest)

    def round_ctx():
        n = len(u)
        gen = torch.Generator().manual_seed(4)
        return RoundContext(1, list(range(n)), torch.ones(n), torch.zeros(1), gen, metrics)

    params = {"agr": "median", "b": 3.0, "omniscient": omniscient}
    simulation = FangClient.build_adversary(range(c), **params)(u, round_ctx())
    app = fang_adversary(Fang(agr="median", b=3.0), range(c), omniscient)(u, round_ctx())
    assert torch.equal(simulation, app)
    own = fang_trimmed_mean(u[:c], c, torch.Generator().manual_seed(4), full_knowledge=False)
    assert torch.equal(app[:c], own) is (not omniscient)
