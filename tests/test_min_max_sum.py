"""Min-Max and Min-Sum (Shejwalkar & Houmansadr, NDSS 2021)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clients.min_max import (
    PERTURBATIONS,
    MinMax,
    distance_terms,
    min_max,
    min_max_gamma,
    perturbation,
    search_gamma,
)
from clients.min_sum import MinSum, min_sum, min_sum_gamma

TAU = 1e-5


def rows(seed, k=6, d=9):
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed))


def sq_dists_to(g, v):
    return ((g.double() - v.double()) ** 2).sum(dim=1)


def honest_pairwise(g):
    return torch.cdist(g.double(), g.double()) ** 2


def closed_form_min_max(g, p):
    t = distance_terms(g, p)
    bound = float(t.pairwise.max())
    roots = (-t.b + torch.sqrt(t.b**2 - t.c * (t.a - bound))) / t.c
    return float(roots.min())


def closed_form_min_sum(g, p):
    t = distance_terms(g, p)
    bound = float(t.pairwise.sum(dim=1).max())
    return math.sqrt((bound - float(t.a.sum())) / (g.shape[0] * t.c))


def test_distance_terms_equal_direct_distances():
    g = rows(0)
    p = perturbation(g, "std")
    t = distance_terms(g, p)
    mu = g.double().mean(dim=0)
    assert torch.allclose(t.pairwise, honest_pairwise(g), rtol=1e-5, atol=1e-5)
    for gamma in (0.0, 0.7, 3.0):
        assert torch.allclose(
            t.candidate(gamma), sq_dists_to(g, mu + gamma * p.double()), rtol=1e-5
        )


def test_perturbations_by_hand():
    g = torch.tensor([[1.0, -4.0, 0.0], [3.0, 0.0, 0.0]])
    assert torch.allclose(perturbation(g, "std"), -torch.tensor([math.sqrt(2), math.sqrt(8), 0]))
    assert torch.equal(perturbation(g, "sign"), torch.tensor([-1.0, 1.0, -0.0]))
    assert torch.allclose(
        perturbation(g, "unit_vec"), torch.tensor([-2.0, 2.0, 0.0]) / math.sqrt(8)
    )
    assert torch.equal(perturbation(torch.tensor([[1.0], [-1.0]]), "unit_vec"), torch.zeros(1))


def test_min_max_by_hand():
    g = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    v = min_max(g, "sign")
    # mean (2/3, 2/3), p = -(1, 1): the farthest point is (2, 0) at distance sqrt(8)
    exact = 1.0 - math.sqrt(3.0)
    assert torch.allclose(v, torch.tensor([exact, exact]), atol=3 * TAU)
    assert float(sq_dists_to(g, v).max()) <= 8.0 + 1e-5


@pytest.mark.parametrize("kind", PERTURBATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_max_satisfies_its_constraint_with_maximal_gamma(kind, seed):
    g = rows(seed)
    p = perturbation(g, kind)
    terms = distance_terms(g, p)
    gamma = min_max_gamma(terms)
    bound = float(honest_pairwise(g).max())
    mu = g.double().mean(dim=0)
    assert float(sq_dists_to(g, mu + gamma * p.double()).max()) <= bound * (1 + 1e-6)
    assert float(sq_dists_to(g, mu + (gamma + 3 * TAU) * p.double()).max()) > bound
    assert abs(gamma - closed_form_min_max(g, p)) <= 2 * TAU + 1e-9
    v = min_max(g, kind)
    assert torch.allclose(v, g.mean(dim=0) + gamma * p)


@pytest.mark.parametrize("kind", PERTURBATIONS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_min_sum_satisfies_its_constraint_with_maximal_gamma(kind, seed):
    g = rows(seed)
    p = perturbation(g, kind)
    gamma = min_sum_gamma(distance_terms(g, p))
    bound = float(honest_pairwise(g).sum(dim=1).max())
    mu = g.double().mean(dim=0)
    assert float(sq_dists_to(g, mu + gamma * p.double()).sum()) <= bound * (1 + 1e-6)
    assert float(sq_dists_to(g, mu + (gamma + 3 * TAU) * p.double()).sum()) > bound
    assert abs(gamma - closed_form_min_sum(g, p)) <= 2 * TAU + 1e-9
    assert torch.allclose(min_sum(g, kind), g.mean(dim=0) + gamma * p)


def test_min_sum_by_hand():
    # mean (1, 0), p = (0, -1): 2 + 2 gamma^2 <= 4
    g = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    t = distance_terms(g, torch.tensor([0.0, -1.0]))
    assert min_sum_gamma(t) == pytest.approx(1.0, abs=2 * TAU)


def test_search_gamma_edges():
    assert search_gamma(lambda g: g <= 3.0, 10.0, TAU) == pytest.approx(3.0, abs=2 * TAU)
    assert search_gamma(lambda g: False, 10.0, TAU) == 0.0
    capped = search_gamma(lambda g: True, 10.0, TAU)
    assert 20.0 - 2 * TAU <= capped < 20.0


def test_gamma_is_capped_below_twice_gamma_init():
    g = rows(4)
    p = perturbation(g, "unit_vec")
    assert closed_form_min_max(g, p) > 0.5
    assert min_max_gamma(distance_terms(g, p), gamma_init=0.25) < 0.5


def test_identical_updates_give_the_mean():
    g = torch.ones(4, 3)
    for fn in (min_max, min_sum):
        for kind in PERTURBATIONS:
            assert torch.allclose(fn(g, kind), torch.ones(3)), (fn, kind)


def test_huge_rows_stay_finite_and_scale():
    g = rows(5, k=4, d=5)
    for fn in (min_max, min_sum):
        big = fn(g * 1e30, "std")
        assert torch.isfinite(big).all()
        assert torch.allclose(big / 1e30, fn(g, "std"), rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"perturbation_kind": "cosine"}, "perturbation"),
        ({"gamma_init": 0.0}, "gamma_init"),
        ({"gamma_init": float("inf")}, "gamma_init"),
        ({"tau": -1.0}, "tau"),
        ({"tau": float("nan")}, "tau"),
    ],
)
def test_bad_parameters_raise(kwargs, name):
    for fn in (min_max, min_sum):
        with pytest.raises(ValueError, match=name):
            fn(rows(0), **kwargs)


def test_client_forges_call_the_functions():
    g = rows(6)
    gen = torch.Generator()
    ids = list(range(len(g)))
    assert torch.equal(MinMax("sign", 50.0).forge(g, ids, 2, 8, gen), min_max(g, "sign", 50.0))
    assert torch.equal(MinSum(tau=1e-3).forge(g, ids, 2, 8, gen), min_sum(g, tau=1e-3))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.floats(-100, 100, allow_nan=False), min_size=15, max_size=15),
    st.sampled_from(PERTURBATIONS),
)
def test_constraints_hold_on_random_inputs(values, kind):
    g = torch.tensor(values, dtype=torch.float32).reshape(5, 3)
    pairwise = honest_pairwise(g)
    slack = 1e-4 * (1 + float(pairwise.max()))
    v = min_max(g, kind)
    assert float(sq_dists_to(g, v).max()) <= float(pairwise.max()) + slack
    v = min_sum(g, kind)
    assert float(sq_dists_to(g, v).sum()) <= float(pairwise.sum(dim=1).max()) + 5 * slack
