"""AGR-tailored attack: the simulated rules, the search, and the paper's property."""

import pytest
import torch

from clients.agr_tailored import agr_tailored, deviation_search, krum_choice, simulate
from clients.alie import alie
from clients.min_max import min_max
from flsec_flower.aggregation import RoundContext
from strategies import Krum, TrimmedMean
from strategies.median import coordinate_median


def ctx(n):
    return RoundContext(1, list(range(n)), torch.ones(n), torch.zeros(1), torch.Generator())


def rule_output(agr, rows, f):
    """The defences' own implementations, independent of the attack's simulation."""
    if agr == "krum":
        return Krum(f=f, device="cpu").aggregate_updates(rows, ctx(len(rows))).update
    if agr == "trimmed_mean":
        return TrimmedMean(b=f, device="cpu").aggregate_updates(rows, ctx(len(rows))).update
    return coordinate_median(rows).update


def honest_round(k=12, d=20, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.5 + torch.randn(k, d, generator=gen)


@pytest.mark.parametrize("agr", ["krum", "median", "trimmed_mean"])
def test_simulated_rules_equal_the_defences(agr):
    rows = honest_round(k=9, seed=3)
    assert torch.allclose(simulate(rows, agr, 2), rule_output(agr, rows, 2), atol=1e-6)


def test_small_cases_by_hand():
    # Krum, f = 1, 4 rows: one neighbour each; 0.1 has 0.1 to both sides, 0.0 also 0.1: tie to 0
    assert krum_choice(torch.tensor([[0.0], [0.1], [0.2], [5.0]]), 1) == 0
    assert simulate(torch.tensor([[0.0], [1.0], [9.0], [3.0]]), "median", 0).tolist() == [2.0]
    # against the plain mean nothing stops the attack: the scale reaches 2 gamma_init
    g = torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    v = agr_tailored(g, 1, "mean", gamma_init=1.0, tau=1e-6)
    assert v.tolist() == pytest.approx([0.0, 0.0], abs=1e-5)  # mu (2, 0) - 2 * (1, 0)
    # against Krum (f = 1) among 0 and 2 with one crafted v = 1 - gamma: one neighbour each;
    # for v <= 0 the scores are v^2 (v), min(v^2, 4) (row 0) and 4 (row 2): v is chosen (ties
    # go to the first row) while v^2 <= 4, so the largest deviation is at v = -2 (gamma = 3)
    g = torch.tensor([[0.0], [2.0]])
    v = agr_tailored(g, 1, "krum", gamma_init=10.0, tau=1e-6)
    assert float(v[0]) == pytest.approx(-2.0, abs=1e-4)
    # the search keeps the best scale: a dip after a peak is not taken for a plateau
    assert deviation_search(lambda g: min(g, 3.0) - 0.01 * g, 10.0, 1e-6) == pytest.approx(3.0)
    with pytest.raises(ValueError, match="agr"):
        agr_tailored(g, 1, "bulyan")


@pytest.mark.parametrize("agr", ["krum", "median", "trimmed_mean"])
def test_tailored_attack_deviates_the_rule_more_than_the_agnostic_ones(agr):
    # the paper's property (Section 4.2, Table 3): tailoring the scale to the rule beats the
    # AGR-agnostic Min-Max and ALIE on that rule
    honest, c = honest_round(), 3
    mu = honest.mean(0)

    def deviation(forged):
        rows = torch.cat([forged.expand(c, -1), honest])
        return float((rule_output(agr, rows, c) - mu).norm())

    tailored = deviation(agr_tailored(honest, c, agr, perturbation_kind="unit_vec"))
    adaptive_alie = deviation(agr_tailored(honest, c, agr, perturbation_kind="std"))
    agnostic = deviation(min_max(honest, "unit_vec"))
    plain_alie = deviation(alie(honest, c, c + len(honest)))
    assert tailored > agnostic
    assert adaptive_alie > plain_alie
