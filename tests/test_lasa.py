"""LASA: hand-computed round, layer-adaptive filtering (the paper's point), layout wiring."""

import numpy as np
import pytest
import torch
from flwr.common import ndarrays_to_parameters

from flsec_flower.aggregation import RoundContext
from strategies import LASA
from strategies.lasa import lasa, mz_scores, sparsify


def test_sparsify_keeps_each_rows_top_k():
    rows = torch.tensor([[4.0, -3.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0, -1.0]])
    # k = floor(0.6 * 5) = 3 per row; the second row has one non-zero coordinate
    out = sparsify(rows, 0.4)
    assert out.tolist() == [[4.0, -3.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0, -1.0]]


def test_mz_scores_match_numpy():
    x = np.array([0.3, 1.2, 0.9, 5.0, 1.1])
    expected = np.abs(x - np.median(x)) / np.std(x)
    assert mz_scores(torch.tensor(x)).numpy() == pytest.approx(expected)
    assert mz_scores(torch.tensor([2.0, 2.0, 2.0])).tolist() == [0.0, 0.0, 0.0]


def test_lasa_by_hand():
    # one 2-coordinate weight layer (sparsity 0.5: each row keeps its larger coordinate)
    # and one 1-coordinate bias layer
    u = torch.tensor(
        [[3.0, 4.0, 1.0], [4.0, 3.0, 1.0], [3.0, 4.0, 1.0], [4.0, 3.0, 1.0], [-30.0, -40.0, 10.0]]
    )
    # norms sqrt(26) x 4 and sqrt(2600): the last row is clipped to [-3, -4, 1]
    agg = lasa(u, [(slice(0, 2), True), (slice(2, 3), False)], sparsity=0.5)
    # weight layer sparsified: [0, 4], [4, 0], [0, 4], [4, 0], [0, -4]: equal norms (MZ 0);
    # sign purities 1, 1, 1, 1, -1: median 1, std .8, the last MZ 2.5 > 1: out.
    # bias layer: 1 for everyone: all in. The last row is out of 1 layer of 2: flagged.
    assert agg.scores.tolist() == [0.0, 0.0, 0.0, 0.0, 0.5]
    assert agg.flagged == [4]
    assert agg.update.tolist() == pytest.approx([2.0, 2.0, 1.0])


def test_layer_adaptive_filtering():
    # Xu et al.: filtering per layer keeps an attacker's clean layers and drops its
    # poisoned ones (here the second layer of two attackers is sign-flipped). Every row's
    # layers are permutations of one vector: equal norms, no clipping, no norm outlier.
    rng = np.random.default_rng(0)
    base = np.abs(rng.normal(loc=1.0, scale=0.3, size=20))
    u = np.stack(
        [np.concatenate([rng.permutation(base), rng.permutation(base)]) for _ in range(10)]
    )
    u[:2, 20:] *= -1.0
    layers = [(slice(0, 20), True), (slice(20, 40), True)]
    agg = lasa(torch.tensor(u, dtype=torch.float32), layers, sparsity=0.0)
    assert np.allclose(agg.update[:20].numpy(), u[:, :20].mean(0), atol=1e-6)
    assert np.allclose(agg.update[20:].numpy(), u[2:, 20:].mean(0), atol=1e-6)
    assert agg.scores.tolist()[:3] == [0.5, 0.5, 0.0]  # out of one layer of two
    assert agg.flagged == [0, 1]


def test_layers_come_from_the_model_layout():
    init = [np.zeros((2, 3), np.float32), np.zeros(2, np.float32)]
    strategy = LASA(device="cpu", initial_parameters=ndarrays_to_parameters(init))
    assert strategy.layers(8) == [(slice(0, 8), True)]  # no model yet: one weight layer
    strategy.initialize_parameters(None)
    assert strategy.layers(8) == [(slice(0, 6), True), (slice(6, 8), False)]
    ctx = RoundContext(1, [0, 1, 2], torch.ones(3), torch.zeros(8), torch.Generator())
    agg = strategy.aggregate_updates(torch.ones((3, 8)), ctx)
    assert agg.update.tolist() == [1.0] * 8 and agg.flagged == []
    with pytest.raises(ValueError, match="sparsity must be below 1"):
        LASA(sparsity=1.0, device="cpu")
