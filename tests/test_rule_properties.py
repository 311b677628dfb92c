"""Properties every robust rule must have, checked with hypothesis, and the strategies end to end.

* permutation invariance: reordering the clients does not change the aggregate;
* translation equivariance (median, trimmed mean, Krum, Multi-Krum, Bulyan, RFA from
  the mean): ``rule(U + t) = rule(U) + t``;
* with fewer attackers than the breakdown point, rows of magnitude 1e30 leave the
  aggregate finite and within the honest updates' range;
* randomised rules give the same result for the same seed.
"""

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies import (
    Bulyan,
    CenteredClipping,
    CoordinateMedian,
    GeometricMedian,
    Krum,
    MultiKrum,
    NoisyMedian,
    TrimmedMean,
)
from strategies.bulyan import bulyan
from strategies.centered_clipping import centered_clipping
from strategies.krum import krum
from strategies.median import coordinate_median
from strategies.noisy_median import noisy_median
from strategies.rfa import geometric_median
from strategies.trimmed_mean import trimmed_mean

# rule(updates, f) -> aggregate update; every rule tolerates f Byzantine rows when n >= 4f + 3
RULES = {
    "krum": lambda u, f: krum(u, f).update,
    "multikrum": lambda u, f: krum(u, f, m=None).update,
    "bulyan": lambda u, f: bulyan(u, f).update,
    "median": lambda u, f: coordinate_median(u).update,
    "trimmed_mean": lambda u, f: trimmed_mean(u, b=f).update,
    "rfa": lambda u, f: geometric_median(u).update,
    "rfa_zero": lambda u, f: geometric_median(u, init="zero").update,
    "centered_clipping": lambda u, f: centered_clipping(u, tau=1.0, iterations=2).update,
}
EQUIVARIANT = ["krum", "multikrum", "bulyan", "median", "trimmed_mean", "rfa"]
# rules whose every coordinate stays within the honest range under f huge rows
COORDINATE_BOUNDED = ["krum", "multikrum", "bulyan", "median", "trimmed_mean"]

SETTINGS = settings(max_examples=30, deadline=None)


@st.composite
def matrices(draw):
    """A float32 update matrix with f, n >= 4f + 3, random spread per row."""
    f = draw(st.integers(0, 3))
    n = draw(st.integers(4 * f + 3, 4 * f + 8))
    d = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 50.0]))
    rng = np.random.default_rng(seed)
    u = rng.normal(size=(n, d)) * rng.uniform(0.2, 3.0, (n, 1)) * scale
    return torch.from_numpy(u.astype(np.float32)), f, rng


def close(a, b, scale):
    return torch.allclose(a, b, rtol=1e-4, atol=1e-4 * scale)


def tied(scores, m):
    """Whether the m-th and (m+1)-th smallest Krum scores are (nearly) equal."""
    s = torch.sort(scores).values
    return m < len(s) and bool(s[m] - s[m - 1] <= 1e-3 * s[m].abs())


def tie_prone(u, f):
    """The selection rules whose choice on ``u`` hangs on a (near) tie, as explained below."""
    scores = krum(u, f).scores
    skip = {"bulyan"} if f in (1, 2) else set()
    if tied(scores, 1):
        skip.add("krum")
    if tied(scores, u.shape[0] - f):
        skip.add("multikrum")
    return skip


@SETTINGS
@given(matrices())
def test_permutation_invariance(data):
    """Selections are invariant unless their scores tie; ties go to the lower row.

    Krum's ties are accidents of the data, except for mutual nearest neighbours when a
    score counts one neighbour: Bulyan's last recursive-Krum steps do when f <= 2, so
    its choice there follows the row order (the strategy orders rows by partition id).
    """
    u, f, rng = data
    perm = torch.from_numpy(rng.permutation(u.shape[0]))
    scale = float(u.abs().max())
    skip = tie_prone(u, f)
    for name, rule in RULES.items():
        if name not in skip:
            assert close(rule(u, f), rule(u[perm], f), scale), name


def test_bulyan_breaks_a_mutual_nearest_tie_by_row_order():
    """n=7, f=1: the last Krum step scores the 3 rows left by 1 neighbour each.

    Left are 2, 17 and 45: 2 and 17 are each other's nearest, a tie won by the lower row.
    With 2 first the selection is {15, 28, 4, 35, 2} (median 15; closest 3: 2, 4, 15 as
    |2 - 15| = |28 - 15| goes to the lower value); with 17 first it is {15, 28, 4, 35, 17}.
    """
    u = torch.tensor([[2.0], [4.0], [15.0], [17.0], [28.0], [35.0], [45.0]])
    assert bulyan(u, 1).update.item() == 7.0
    assert bulyan(u[[3, 1, 2, 0, 4, 5, 6]], 1).update.item() == 20.0


@SETTINGS
@given(matrices(), st.floats(-10.0, 10.0))
def test_translation_equivariance(data, shift):
    u, f, rng = data
    t = torch.from_numpy(rng.normal(size=u.shape[1]).astype(np.float32)) * shift
    scale = float(u.abs().max()) + float(t.abs().max())
    for name in set(EQUIVARIANT) - tie_prone(u, f):
        assert close(RULES[name](u + t, f), RULES[name](u, f) + t, scale), name


@SETTINGS
@given(matrices(), st.sampled_from([1e30, -1e30, 3e38]))
def test_huge_rows_keep_the_aggregate_bounded(data, huge):
    u, f, rng = data
    if f == 0:
        f = 1
        u = torch.cat([u, u[torch.arange(4) % u.shape[0]] * 0.5])  # n >= 4f + 3 for f = 1
    bad = torch.from_numpy(rng.choice(u.shape[0], f, replace=False))
    honest = u[[i for i in range(u.shape[0]) if i not in bad.tolist()]]
    u = u.clone()
    u[bad] = huge * torch.from_numpy(rng.choice([-1.0, 1.0], size=(f, 1)).astype(np.float32))
    low, high = honest.min(0).values, honest.max(0).values
    slack = 1e-5 * (1 + float(honest.abs().max()))
    for name in COORDINATE_BOUNDED:
        out = RULES[name](u, f)
        assert torch.isfinite(out).all(), name
        assert (out >= low - slack).all() and (out <= high + slack).all(), name
    max_norm = float(torch.linalg.vector_norm(honest, dim=1).max())
    assert float(torch.linalg.vector_norm(RULES["rfa_zero"](u, f))) <= 2 * max_norm + slack
    assert torch.isfinite(RULES["rfa"](u, f)).all()
    clipped = RULES["centered_clipping"](u, f)  # 2 steps from 0, each of norm <= tau = 1
    assert float(torch.linalg.vector_norm(clipped)) <= 2.0 + 1e-5
    noisy = noisy_median(u, 0.01, torch.Generator().manual_seed(0)).update
    assert (noisy >= low - 0.1).all() and (noisy <= high + 0.1).all()


@SETTINGS
@given(matrices(), st.integers(0, 2**63 - 1))
def test_same_seed_same_result(data, seed):
    u, f, _ = data
    first = noisy_median(u, 0.5, torch.Generator().manual_seed(seed)).update
    again = noisy_median(u, 0.5, torch.Generator().manual_seed(seed)).update
    assert torch.equal(first, again)
    for name, rule in RULES.items():
        assert torch.equal(rule(u, f), rule(u, f)), name


# ---------------------------------------------------------------- strategies end to end
STRATEGIES = [
    (Krum, {"f": 2}, lambda u: krum(u, 2)),
    (MultiKrum, {"f": 2}, lambda u: krum(u, 2, m=None)),
    (Bulyan, {"f": 2}, lambda u: bulyan(u, 2)),
    (CoordinateMedian, {}, coordinate_median),
    (TrimmedMean, {"b": 2}, lambda u: trimmed_mean(u, b=2)),
    (GeometricMedian, {}, geometric_median),
    (CenteredClipping, {"tau": 0.5}, lambda u: centered_clipping(u, tau=0.5)),
    (NoisyMedian, {"sigma": 0.0}, lambda u: noisy_median(u, 0.0, torch.Generator())),
]


@pytest.mark.parametrize(
    ("cls", "kwargs", "rule"), STRATEGIES, ids=lambda x: getattr(x, "__name__", "")
)
def test_strategy_round_equals_the_rule(cls, kwargs, rule):
    rng = np.random.default_rng(0)
    shapes = [(3, 4), (5,)]
    init = [rng.normal(size=s).astype(np.float32) for s in shapes]
    g = np.concatenate([a.ravel() for a in init])
    n = 11
    updates = rng.normal(size=(n, 17)).astype(np.float32)
    updates[2], updates[9] = 1e3, -1e3  # two attackers, far from everything
    pids = rng.permutation(100)[:n]
    results = []
    for i in rng.permutation(n):
        model = g + updates[i]
        arrays = [model[:12].reshape(3, 4), model[12:]]
        res = FitRes(
            Status(Code.OK, ""), ndarrays_to_parameters(arrays), 10, {"partition_id": int(pids[i])}
        )
        results.append((None, res))
    strategy = cls(initial_parameters=ndarrays_to_parameters(init), device="cpu", **kwargs)
    strategy.initialize_parameters(None)
    params, metrics = strategy.aggregate_fit(1, results, [])
    order = np.argsort(pids)
    expected = rule(torch.from_numpy(updates[order]))
    new = np.concatenate([a.ravel() for a in parameters_to_ndarrays(params)])
    np.testing.assert_allclose(new, g + expected.update.numpy(), rtol=1e-5, atol=1e-5)
    diag = strategy.diagnostics[1]
    assert diag.partition_ids == sorted(int(p) for p in pids)
    if expected.selected is not None:
        assert diag.selected == [int(pids[order][i]) for i in expected.selected]
        assert not {int(pids[2]), int(pids[9])} & set(diag.selected)
    assert metrics["num_rejected"] == 0
