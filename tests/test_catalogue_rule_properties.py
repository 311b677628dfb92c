"""Permutation invariance of the issue-12 rules: reordering clients reorders their verdicts only."""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from strategies.auror import auror
from strategies.clustering import cosine_clustering
from strategies.crfl import crfl
from strategies.deepsight import deepsight, output_neurons
from strategies.dnc import dnc
from strategies.fang_rejection import fang_rejection
from strategies.lasa import lasa
from strategies.signguard import signguard

RULES = {
    "dnc": lambda u: dnc(u, f=2, generator=torch.Generator().manual_seed(0)),
    "signguard": lambda u: signguard(u, torch.Generator().manual_seed(0)),
    "clustering": cosine_clustering,
    "auror": lambda u: auror(u, alpha=1.0),
    "lasa": lambda u: lasa(
        u, [(slice(0, u.shape[1] // 2), True), (slice(u.shape[1] // 2, None), False)]
    ),
    "deepsight": lambda u: deepsight(u, *output_neurons(None, u.shape[1]), []),
    "crfl": lambda u: crfl(u, torch.zeros(u.shape[1]), torch.Generator(), clip=5.0, sigma=0.0),
    "fang_rejection": lambda u: fang_rejection(
        u,
        torch.zeros(u.shape[1]),
        lambda w: (float((w - 1.0).square().sum()), 0.0),
        f=2,
        criterion="lfr",
    ),
}


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(6, 12), d=st.integers(2, 30))
def test_permutation_invariance(seed, n, d):
    rng = np.random.default_rng(seed)
    u = rng.normal(loc=1.0, size=(n, d)) * rng.uniform(0.2, 3.0, (n, 1))
    u[:2] = -3.0 * u[:2]  # two attackers: verdicts that are not ties
    u = torch.tensor(u, dtype=torch.float32)
    perm = rng.permutation(n)
    for name, rule in RULES.items():
        a, b = rule(u), rule(u[torch.from_numpy(perm)])
        assert torch.allclose(a.update, b.update, rtol=1e-4, atol=1e-5), name
        if a.flagged is not None:
            assert sorted(perm[b.flagged].tolist()) == a.flagged, name
