"""RFA (smoothed Weiszfeld geometric median): by hand, against a NumPy reference, strategy."""

import math

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays

from strategies import GeometricMedian
from strategies.rfa import geometric_median


def weiszfeld_reference(points, iterations, nu=1e-6, alphas=None, start=None):
    """Plain float64 smoothed Weiszfeld, written from Pillutla et al.'s Algorithm 2."""
    n = points.shape[0]
    alphas = np.full(n, 1.0 / n) if alphas is None else alphas / alphas.sum()
    z = alphas @ points if start is None else start
    for _ in range(iterations):
        betas = alphas / np.maximum(nu, np.linalg.norm(points - z, axis=1))
        z = betas @ points / betas.sum()
    return z


def objective(points, z):
    return np.linalg.norm(points - z, axis=1).sum()


def test_square_centre_by_hand():
    u = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    assert torch.allclose(geometric_median(u).update, torch.tensor([1.0, 1.0]))


def test_fermat_point_of_a_thin_triangle():
    """The median of (1,0), (-1,0), (0,100) sees the base at 120 degrees: y = 1/sqrt(3)."""
    u = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 100.0]])
    z = geometric_median(u, iterations=200).update
    assert torch.allclose(z, torch.tensor([0.0, 1 / math.sqrt(3)]), atol=1e-4)


def test_one_step_from_the_mean_is_one_step_rfa():
    """T=1: the mean re-weighted by the inverse distances to the mean (Pillutla et al.)."""
    u = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 6.0]])
    mean = u.mean(0)  # (1, 2)
    w = 1 / torch.linalg.vector_norm(u - mean, dim=1)  # 1/sqrt(5), 1/sqrt(8), 1/sqrt(17)
    expected = (w[:, None] * u).sum(0) / w.sum()
    one_step = geometric_median(u, iterations=1, init="mean").update
    assert torch.allclose(one_step, expected, atol=1e-6)


def test_one_step_from_zero_is_a_rescaled_normalised_mean():
    """T=1 from zero: mean of u_i/|u_i| times the harmonic mean of the norms."""
    u = torch.tensor([[3.0, 4.0], [0.0, 2.0], [-1.0, 0.0], [6.0, 8.0]])
    norms = torch.linalg.vector_norm(u, dim=1)
    expected = (u / norms[:, None]).mean(0) * (len(u) / (1 / norms).sum())
    assert torch.allclose(
        geometric_median(u, iterations=1, init="zero").update, expected, atol=1e-6
    )


@pytest.mark.parametrize(
    ("iterations", "init", "weighted", "seed"),
    [(1, "mean", False, 0), (3, "mean", True, 1), (8, "zero", False, 2), (3, "zero", True, 3)],
)
def test_equals_a_numpy_reference(iterations, init, weighted, seed):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(15, 200)) * rng.uniform(0.2, 4, (15, 1))
    alphas = rng.integers(1, 50, 15).astype(np.float64) if weighted else None
    start = np.zeros(200) if init == "zero" else None
    expected = weiszfeld_reference(a, iterations, alphas=alphas, start=start)
    weights = None if alphas is None else torch.tensor(alphas, dtype=torch.float32)
    ours = geometric_median(
        torch.tensor(a, dtype=torch.float32), iterations, weights=weights, init=init, tol=0.0
    )
    np.testing.assert_allclose(ours.update.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert ours.scores.sum().item() == pytest.approx(1.0)


def test_more_steps_lower_the_objective():
    rng = np.random.default_rng(4)
    a = rng.standard_cauchy(size=(20, 30))
    u = torch.tensor(a, dtype=torch.float32)
    values = [
        objective(a, geometric_median(u, t, init="mean", tol=0.0).update.double().numpy())
        for t in (1, 3, 30)
    ]
    assert values[0] > values[1] > values[2]
    assert values[2] < objective(a, a.mean(0))


def test_integer_weights_equal_repeated_rows():
    rng = np.random.default_rng(5)
    u = torch.from_numpy(rng.normal(size=(4, 25)).astype(np.float32))
    weighted = geometric_median(u, 4, weights=torch.tensor([1.0, 2.0, 1.0, 3.0]), init="mean")
    repeated = geometric_median(u[[0, 1, 1, 2, 3, 3, 3]], 4, init="mean")
    assert torch.allclose(weighted.update, repeated.update, atol=1e-6)


def test_huge_rows_from_zero_stay_bounded_and_from_the_mean_stay_finite():
    rng = np.random.default_rng(6)
    honest = rng.normal(size=(10, 40)).astype(np.float32)
    u = torch.from_numpy(np.concatenate([honest, np.full((3, 40), 1e30, np.float32)]))
    bound = 2 * np.linalg.norm(honest, axis=1).max()
    assert torch.linalg.vector_norm(geometric_median(u, init="zero").update) < bound
    from_mean = geometric_median(u, iterations=3, init="mean").update
    assert torch.isfinite(from_mean).all()  # finite, though a 1e30 row still pulls after 3 steps


def honest_and_huge(seed, n, f, d, huge):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=d) * 10
    honest = centre + rng.normal(size=(n - f, d)) * rng.uniform(0.1, 2.0)
    bad = huge * rng.choice([-1.0, 1.0], size=(f, d)) * rng.uniform(0.5, 1.0, (f, 1))
    u = np.concatenate([honest, bad])[rng.permutation(n)].astype(np.float32)
    return torch.from_numpy(u), honest.astype(np.float32).astype(np.float64)


@pytest.mark.parametrize("seed", range(30))
@pytest.mark.parametrize("huge", [1e30, 3e38, 1e6])
def test_default_rfa_moves_at_most_a_constant_times_the_honest_spread(seed, huge):
    """Issue 10 item 4: f < n/2 rows far away; the default RFA stays near the honest rows.

    With honest rows within r of their mean h and the start within s of h, every point
    the steps reach satisfies |z - h| <= (n s + 2 (n - f) r) / (n - 2 f) (docstring of
    geometric_median); s <= the honest bounding box's diagonal, as is r.
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 20))
    f = int(rng.integers(1, (n - 1) // 2 + 1))
    u, honest = honest_and_huge(seed, n, f, int(rng.integers(1, 60)), huge)
    z = geometric_median(u).update.double().numpy()
    h = honest.mean(axis=0)
    box = float(np.linalg.norm(honest.max(axis=0) - honest.min(axis=0)))
    assert np.isfinite(z).all()
    assert np.linalg.norm(z - h) <= (n + 2 * (n - f)) / (n - 2 * f) * box * (1 + 1e-5) + 1e-6


def test_default_rfa_reaches_the_geometric_median_from_a_median_that_is_a_row():
    """The coordinate median (0, 0) is row 0; Weiszfeld from a row must still move on."""
    u = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 6.0]])
    a = u.double().numpy()
    reference = weiszfeld_reference(a, 2000, start=np.array([1.0, 1.0]))
    np.testing.assert_allclose(geometric_median(u).update.numpy(), reference, atol=1e-4)
    assert objective(a, geometric_median(u).update.double().numpy()) < objective(a, a[0]) - 0.1


def test_tolerance_stops_early_and_zero_tolerance_runs_every_step():
    rng = np.random.default_rng(9)
    u = torch.from_numpy(rng.normal(size=(9, 30)).astype(np.float32))
    converged = geometric_median(u, iterations=1000, tol=0.0).update
    assert torch.allclose(geometric_median(u).update, converged, atol=1e-4)


def test_duplicate_rows_do_not_divide_by_zero():
    u = torch.ones(5, 7)
    agg = geometric_median(u, 3)
    assert torch.allclose(agg.update, torch.ones(7))
    assert torch.isfinite(agg.scores).all()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"iterations": 0}, "iterations"),
        ({"iterations": 2.5}, "iterations"),
        ({"nu": 0.0}, "nu"),
        ({"nu": float("nan")}, "nu"),
        ({"init": "trimmed"}, "init"),
        ({"tol": -1.0}, "tol"),
    ],
)
def test_invalid_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        geometric_median(torch.zeros(3, 2), **kwargs)
    with pytest.raises(ValueError, match=match):
        GeometricMedian(**kwargs)


def test_strategy_uses_sample_counts_only_when_weighted():
    rng = np.random.default_rng(7)
    init = [np.zeros((3, 3), np.float32)]
    updates = rng.normal(size=(6, 9)).astype(np.float32)
    counts = [5, 90, 1, 30, 7, 60]
    results = [
        (
            None,
            FitRes(
                Status(Code.OK, ""),
                ndarrays_to_parameters([updates[i].reshape(3, 3)]),
                counts[i],
                {"partition_id": i},
            ),
        )
        for i in range(6)
    ]
    u = torch.from_numpy(updates)
    for weighted, weights in [(False, None), (True, torch.tensor(counts, dtype=torch.float32))]:
        strategy = GeometricMedian(
            initial_parameters=ndarrays_to_parameters(init), device="cpu", weighted=weighted
        )
        strategy.initialize_parameters(None)
        params, _ = strategy.aggregate_fit(1, results, [])
        expected = geometric_median(u, weights=weights).update.numpy()
        np.testing.assert_allclose(parameters_to_ndarrays(params)[0].ravel(), expected, rtol=1e-6)
