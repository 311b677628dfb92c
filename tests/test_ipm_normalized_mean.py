"""Inner product manipulation (Xie et al., 2019) and the normalized-mean attack."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.ipm import Ipm, ipm
from clients.normalized_mean import (
    NormalizedMean,
    normalized_mean_attack,
    unit_rows,
)


def test_ipm_is_minus_epsilon_times_the_mean_exactly():
    g = torch.tensor([[1.0, -2.0, 4.0], [3.0, 2.0, 0.0]])
    assert torch.equal(ipm(g), torch.tensor([-0.2, 0.0, -0.2]))
    assert torch.equal(ipm(g, epsilon=100.0), torch.tensor([-200.0, 0.0, -200.0]))


def test_ipm_client_forge_passes_epsilon():
    g = torch.tensor([[2.0], [4.0]])
    assert torch.equal(
        Ipm(epsilon=0.5).forge(g, [0], 1, 3, torch.Generator()), torch.tensor([-1.5])
    )


@pytest.mark.parametrize("epsilon", [0.0, -0.1, float("nan"), float("inf")])
def test_ipm_bad_epsilon_raises(epsilon):
    with pytest.raises(ValueError, match="epsilon"):
        ipm(torch.ones(2, 2), epsilon)


def test_normalized_mean_attack_by_hand():
    g = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, -2.0], [1.0, 0.0, 0.0]])
    expected = -torch.tensor([0.6 + 1.0, 0.8, -1.0])
    assert torch.allclose(normalized_mean_attack(g), expected)


def test_zero_rows_contribute_nothing():
    g = torch.tensor([[0.0, 0.0], [0.0, 5.0]])
    assert torch.equal(normalized_mean_attack(g), torch.tensor([0.0, -1.0]))


def test_unit_rows_of_huge_rows_are_finite():
    g = torch.tensor([[3e30, 4e30], [-1e-30, 0.0]])
    assert torch.allclose(unit_rows(g), torch.tensor([[0.6, 0.8], [-1.0, 0.0]]))


def test_normalized_mean_client_forge():
    g = torch.tensor([[0.0, 2.0], [2.0, 0.0]])
    assert torch.equal(
        NormalizedMean().forge(g, [0, 1], 2, 4, torch.Generator()), normalized_mean_attack(g)
    )


@settings(max_examples=40, deadline=None)
@given(
    # entries are 0 or at least 1e-20 in size: scaling a float32 subnormal by c
    # rounds it (or to 0), which breaks scale invariance for reasons of storage
    st.lists(
        st.one_of(st.just(0.0), st.floats(1e-20, 1e3), st.floats(-1e3, -1e-20)),
        min_size=12,
        max_size=12,
    ),
    st.floats(1e-3, 1e3),
)
def test_normalized_mean_attack_is_scale_invariant_with_unit_terms(values, c):
    g = torch.tensor(values, dtype=torch.float32).reshape(4, 3)
    v = normalized_mean_attack(g)
    assert torch.allclose(normalized_mean_attack(c * g), v, atol=1e-5)
    nonzero = int((g.abs().amax(dim=1) > 0).sum())
    assert float(v.norm()) <= nonzero + 1e-4
    assert math.isfinite(float(v.norm()))
