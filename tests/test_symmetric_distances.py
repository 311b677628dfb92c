"""Distance matrices are exactly symmetric with a zero diagonal; selections match float64.

A float32 Gram product is not always symmetric, which flipped near-ties in
Bulyan and made FLAME's HDBSCAN refuse its distance matrix.
"""

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from strategies._linalg import gram, inner_products, sq_distances
from strategies.bulyan import bulyan, recursive_krum
from strategies.flame import flame, model_cosine_distances
from strategies.krum import krum, neighbour_scores
from strategies.nnm import nearest_neighbour_mixing


def random_updates(seed, n=None, d=None):
    rng = np.random.default_rng(seed)
    n = n or int(rng.integers(5, 26))
    d = d or int(rng.integers(1, 300))
    u = rng.normal(size=(n, d)) * rng.uniform(0.1, 3.0, (n, 1)) + rng.normal(size=d) * 5
    return torch.from_numpy(u.astype(np.float32))


@pytest.mark.parametrize("seed", range(40))
def test_gram_and_distances_are_exactly_symmetric(seed):
    u = random_updates(seed)
    for matrix in (gram(u), gram(u, chunk=7), inner_products(u), sq_distances(gram(u))):
        assert torch.equal(matrix, matrix.T)
    dist = sq_distances(gram(u))
    assert torch.equal(dist.diagonal(), torch.zeros(u.shape[0], dtype=dist.dtype))
    cos = model_cosine_distances(u, torch.from_numpy(np.linspace(-1, 1, u.shape[1])).float())
    assert np.array_equal(cos, cos.T) and not cos.diagonal().any()


def reference_scores(u, f):
    """Krum scores from float64 distances, independent of the Gram trick."""
    x = u.double().numpy()
    dist = torch.from_numpy(cdist(x, x, "sqeuclidean"))
    dist = 0.5 * (dist + dist.T)
    return dist, neighbour_scores(dist, u.shape[0] - f - 2)


@pytest.mark.parametrize("seed", range(150))
def test_selection_equals_a_float64_reference(seed):
    u = random_updates(1000 + seed)
    n = u.shape[0]
    f = int(np.random.default_rng(seed).integers(0, (n - 3) // 4 + 1))
    dist, scores = reference_scores(u, f)
    order = torch.sort(scores, stable=True).indices.tolist()
    assert krum(u, f).selected == order[:1]
    assert sorted(krum(u, f, m=n - f).selected) == sorted(order[: n - f])
    assert bulyan(u, f).selected == recursive_krum(dist, f, n - 2 * f)


def test_ties_go_to_the_lower_row():
    """Integer rows: exact ties; Krum takes the lowest-index row of the lowest score."""
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 0.0], [9.0, 9.0]])
    u = u[[5, 0, 1, 2, 3, 4]]  # row 5 (the centre) moves to the end, the others tie
    assert krum(u, f=1).selected == [5]
    ring = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 7.0]])
    assert krum(ring, f=0).selected == [0]


def test_nnm_neighbourhoods_are_symmetric_for_two_rows():
    u = random_updates(3, n=2, d=50)
    mixed = nearest_neighbour_mixing(u, f=0)
    assert torch.equal(mixed[0], mixed[1])


@pytest.mark.parametrize("seed", range(20))
def test_flame_survives_all_zero_and_zero_model_updates(seed):
    """All-zero updates (a client that did not train) and updates equal to -G (a zero model)."""
    rng = np.random.default_rng(seed)
    n, d = int(rng.integers(4, 15)), int(rng.integers(2, 200))
    g = torch.from_numpy(rng.normal(size=d).astype(np.float32))
    u = torch.from_numpy(rng.normal(size=(n, d)).astype(np.float32)) * 0.01
    zeros = rng.choice(n, int(rng.integers(1, n // 2 + 1)), replace=False)
    u[zeros] = 0.0
    u[zeros[:1]] = -g  # one of them sends the zero model
    agg = flame(u, g, torch.Generator().manual_seed(seed))
    assert torch.isfinite(agg.update).all()
    assert sorted(agg.selected + agg.flagged) == list(range(n))


def test_flame_of_all_zero_updates_is_zero():
    u = torch.zeros((5, 4))
    agg = flame(u, torch.ones(4), torch.Generator().manual_seed(0), noise_lambda=0.0)
    assert torch.equal(agg.update, torch.zeros(4))
