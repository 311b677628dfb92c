"""A Little Is Enough (Baruch et al., 2019)."""

import math
from statistics import NormalDist

import pytest
import torch

from clients.alie import Alie, alie, alie_z


def test_z_is_0253_for_25_workers_and_5_attackers():
    # The reference code (Karimireddy et al.): s = 13 - 5 = 8, Phi^-1(12 / 20) = 0.2533.
    assert round(alie_z(25, 5), 3) == 0.253


@pytest.mark.parametrize(("n", "f"), [(25, 5), (50, 12), (10, 2), (100, 20), (7, 1)])
def test_z_matches_the_formula_with_torch_icdf(n, f):
    s = math.floor(n / 2 + 1) - f
    expected = torch.distributions.Normal(0.0, 1.0).icdf(
        torch.tensor((n - f - s) / (n - f), dtype=torch.float64)
    )
    assert alie_z(n, f) == pytest.approx(float(expected), abs=1e-9)


def test_z_stays_finite_when_the_attackers_are_a_majority():
    # s = floor(6 / 2 + 1) - 4 = 0: the ratio is 1, clipped to 1 - 1 / (2 * 2).
    assert alie_z(6, 4) == pytest.approx(NormalDist().inv_cdf(0.75))
    assert math.isfinite(alie_z(3, 3)) and math.isfinite(alie_z(1, 0))


@pytest.mark.parametrize(("n", "f"), [(0, 0), (5, 6), (5, -1)])
def test_bad_counts_raise(n, f):
    with pytest.raises(ValueError, match="num_"):
        alie_z(n, f)


def test_forge_is_mean_minus_z_std_by_hand():
    g = torch.tensor([[1.0, 0.0, 5.0], [3.0, 0.0, 5.0], [5.0, 3.0, 5.0]])
    # mean (3, 1, 5); unbiased std (2, sqrt(3), 0)
    out = alie(g, num_byzantine=1, num_total=4, z=0.5)
    assert torch.allclose(out, torch.tensor([2.0, 1.0 - 0.5 * math.sqrt(3.0), 5.0]))


def test_forge_uses_the_computed_z_by_default():
    g = torch.tensor([[0.0], [2.0]])
    z = alie_z(25, 5)
    assert torch.allclose(alie(g, 5, 25), torch.tensor([1.0 - z * math.sqrt(2.0)]))


def test_single_reference_row_gives_its_value():
    g = torch.tensor([[1.0, -2.0]])
    assert torch.equal(alie(g, 1, 2), g[0])


def test_huge_rows_do_not_overflow():
    g = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    out = alie(g * 1e30, 1, 3, z=1.0)
    assert torch.isfinite(out).all()
    assert torch.allclose(out / 1e30, alie(g, 1, 3, z=1.0), rtol=1e-5)


@pytest.mark.parametrize("z", [float("nan"), float("inf")])
def test_bad_z_raises(z):
    with pytest.raises(ValueError, match="z"):
        alie(torch.zeros(2, 2), 1, 3, z=z)


def test_client_forge_passes_the_round_counts():
    g = torch.tensor([[0.0], [2.0]])
    out = Alie().forge(g, list(range(len(g))), 5, 25, torch.Generator())
    assert torch.equal(out, alie(g, 5, 25))
