"""FLDetector: L-BFGS against the explicit BFGS recursion, gap statistic, detection, resume."""

import itertools

import numpy as np
import pytest
import torch

from flsec_flower.aggregation import RoundContext
from strategies import FLDetector
from strategies.fldetector import has_two_clusters, lbfgs_product, two_means_1d


def explicit_bfgs(steps, changes):
    """B from sigma I by the textbook BFGS update, one pair at a time (float64)."""
    s_m, y_m = steps[-1], changes[-1]
    b = float(y_m @ s_m) / float(s_m @ s_m) * np.eye(len(s_m))
    for s, y in zip(steps, changes, strict=True):
        bs = b @ s
        b = b - np.outer(bs, bs) / (s @ bs) + np.outer(y, y) / (y @ s)
    return b


def test_lbfgs_compact_form_equals_the_bfgs_recursion():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(5, 5))
    h = h @ h.T + np.eye(5)  # positive definite: s.y > 0 for every pair
    steps = [rng.normal(size=5) for _ in range(3)]
    changes = [h @ s + 0.01 * rng.normal(size=5) for s in steps]
    v = rng.normal(size=5)
    got = lbfgs_product(
        [torch.tensor(s) for s in steps], [torch.tensor(y) for y in changes], torch.tensor(v)
    )
    b = explicit_bfgs(steps, changes)
    assert np.allclose(got.numpy(), b @ v)
    # the secant equation of the latest pair
    last = lbfgs_product(
        [torch.tensor(s) for s in steps],
        [torch.tensor(y) for y in changes],
        torch.tensor(steps[-1]),
    )
    assert np.allclose(last.numpy(), changes[-1])


def test_lbfgs_of_a_scalar_hessian_is_exact():
    s = [torch.tensor([1.0, 0.0, 2.0]), torch.tensor([0.0, 1.0, -1.0])]
    y = [3.0 * x for x in s]
    assert lbfgs_product(s, y, torch.tensor([1.0, 2.0, 3.0])).tolist() == pytest.approx(
        [3.0, 6.0, 9.0]
    )


def test_two_means_1d_is_the_best_split():
    rng = np.random.default_rng(1)
    x = rng.normal(size=7)
    upper, within = two_means_1d(torch.tensor(x))
    best = min(
        (x[list(a)].var() * len(a) + x[[i for i in range(7) if i not in a]].var() * (7 - len(a)))
        for k in range(1, 7)
        for a in itertools.combinations(range(7), k)
    )
    assert within == pytest.approx(best)
    assert x[upper.numpy()].min() > x[~upper.numpy()].max()


def test_gap_statistic():
    gen = torch.Generator().manual_seed(0)
    two = torch.tensor([0.01, 0.012, 0.011, 0.009, 0.01, 0.3, 0.31])
    assert has_two_clusters(two, gen)
    assert not has_two_clusters(torch.full((6,), 0.2), gen)
    assert not has_two_clusters(torch.linspace(0, 1, 12), gen)


def federation(attack, rounds, seed, window=5, n=10, bad=2, d=20, strategy=None, start=1, w=None):
    """Quadratic clients f_i(w) = |A^(1/2) (w - c_i)|^2 / 2: one gradient step each (lr 0.1)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.rand(d, generator=gen) + 0.5
    centres = torch.randn(n, d, generator=gen)
    for _ in range(start - 1):  # the same noise stream as an uninterrupted run
        torch.randn(n, d, generator=gen)
        torch.randn(bad, d, generator=gen)
    strategy = strategy or FLDetector(window=window, device="cpu")
    w = torch.zeros(d) if w is None else w
    updates = []
    for t in range(start, start + rounds):
        u = -0.1 * a * (w - centres) + 0.001 * torch.randn(n, d, generator=gen)
        noise = torch.randn(bad, d, generator=gen)
        if attack == "gaussian":
            u[:bad] = 0.3 * noise
        elif attack == "sign_flip":
            u[:bad] = -u[:bad]
        ctx = RoundContext(
            t, list(range(n)), torch.ones(n), w.clone(), torch.Generator().manual_seed(t)
        )
        agg = strategy.aggregate_updates(u, ctx)
        updates.append(agg.update)
        w = w + agg.update
    return strategy, updates, w


@pytest.mark.parametrize("attack", ["gaussian", "sign_flip"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flags_consistent_attackers_within_a_few_rounds(attack, seed):
    # the paper's claim: the attackers' updates are not predictable from their history; with
    # window N they are flagged as soon as N L-BFGS pairs exist, and no honest client is
    strategy, _, _ = federation(attack, rounds=8, seed=seed)
    assert strategy.excluded == {0, 1}
    strategy, _, _ = federation(attack, rounds=20, seed=seed)
    assert strategy.excluded == {0, 1}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_no_attack_no_flag(seed):
    strategy, _, _ = federation("none", rounds=30, seed=seed)
    assert strategy.excluded == set()


def test_resume_from_state_dict_continues_identically():
    whole, updates, _ = federation("gaussian", rounds=10, seed=4)
    first, early, w = federation("gaussian", rounds=4, seed=4)
    resumed = FLDetector(window=5, device="cpu")
    resumed.load_state_dict(first.state_dict())
    _, late, _ = federation("gaussian", rounds=6, seed=4, strategy=resumed, start=5, w=w)
    assert all(torch.equal(a, b) for a, b in zip(updates, early + late, strict=True))
    assert resumed.excluded == whole.excluded == {0, 1}


def test_validation():
    with pytest.raises(ValueError, match="base must be one of"):
        FLDetector(base="krum", device="cpu")
    with pytest.raises(ValueError, match="window must be a positive integer"):
        FLDetector(window=0, device="cpu")
