"""The mimic attacks (Karimireddy, He & Jaggi, ICLR 2022)."""

import numpy as np
import pytest
import torch

from clients.attack import ACTIVE_TAG
from clients.mimic import (
    Mimic2Client,
    MimicClient,
    MimicForger,
    mimic_fixed,
    mimic_target,
    power_step,
)
from flsec_flower.aggregation import RoundContext


def context(pids, active_rows, seed=0):
    metrics = [
        {ACTIVE_TAG: True, "malicious": True} if i in active_rows else {} for i in range(len(pids))
    ]
    return RoundContext(
        server_round=1,
        partition_ids=list(pids),
        num_examples=torch.ones(len(pids)),
        global_params=torch.zeros(1),
        generator=torch.Generator().manual_seed(seed),
        client_metrics=metrics,
    )


class ReferenceMimic:
    """Loop-based float64 transcription of the authors' MimicVariantAttacker."""

    def __init__(self, warmup, z0):
        self.warmup, self.t, self.z0 = warmup, 0, z0
        self.mu = self.z = None
        self.target = None

    def _cumu(self, grads):
        cumu = np.zeros_like(self.mu)
        for g in grads:
            cumu += np.dot(g - self.mu, self.z) * (g - self.mu)
        return cumu / np.linalg.norm(cumu)

    def __call__(self, ranks, grads):
        avg = sum(grads) / len(grads)
        if self.t == 0:
            self.mu, self.z = avg, self.z0
            self.z = self._cumu(grads)
        elif self.t < self.warmup:
            t = self.t
            self.mu = t / (1 + t) * self.mu + avg / (1 + t)
            self.z = t / (1 + t) * self.z + self._cumu(grads) / (1 + t)
            self.z = self.z / np.linalg.norm(self.z)
        if self.t < self.warmup:
            best = max(range(len(grads)), key=lambda i: np.dot(grads[i], self.z))
            self.target = ranks[best]
        self.t += 1
        return self.target


def test_power_step_and_target_by_hand():
    g = torch.tensor([[3.0, 0.0], [-3.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    z = power_step(g, g.mean(dim=0), torch.tensor([0.6, 0.8]))
    # <g_i, z> = (1.8, -1.8, 0.8, -0.8): sum = 2 * 1.8 * (3, 0) + 2 * 0.8 * (0, 1) = (10.8, 1.6)
    assert torch.allclose(z, torch.tensor([10.8, 1.6]) / np.hypot(10.8, 1.6))
    assert mimic_target(g, z) == 0
    assert mimic_target(g, -z) == 1


@pytest.mark.parametrize("omniscient", [True, False])
def test_all_attackers_copy_exactly_one_reference_row(omniscient):
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(6, 5, generator=gen)
    pids, active = [0, 1, 2, 3, 4, 5], [1, 4]
    out = MimicClient.build_adversary(omniscient=omniscient, malicious_partition_ids={1, 4})(
        u, context(pids, active)
    )
    reference = [0, 2, 3, 5] if omniscient else active
    assert torch.equal(out[1], out[4])
    assert sum(torch.equal(out[1], u[i]) for i in reference) == 1
    keep = [0, 2, 3, 5]
    assert torch.equal(out[keep], u[keep])


def test_mimic_copies_the_extreme_worker_along_the_top_principal_direction():
    honest = torch.tensor([[10.0, 0.0, 0.0], [-10.0, 0.0, 0.0], [0.5, 1.0, 0.0], [0.0, -1.0, 0.2]])
    forger = MimicForger(warmup=1)
    row = forger(honest, [0, 1, 2, 3], 2, 6, torch.Generator().manual_seed(0))
    assert forger.target in (0, 1)
    assert torch.equal(row, honest[forger.target])


def test_matches_the_authors_algorithm_over_rounds_with_warmup():
    d, warmup = 8, 3
    ranks = [0, 2, 3, 5, 6]
    first = torch.Generator().manual_seed(11)
    z0 = torch.randn(d, generator=torch.Generator().manual_seed(11)).double().numpy()
    forger, reference = MimicForger(warmup), ReferenceMimic(warmup, z0)
    data = torch.Generator().manual_seed(5)
    for rnd in range(6):
        grads = torch.randn(len(ranks), d, generator=data) + torch.arange(len(ranks))[:, None] * 0.1
        gen = first if rnd == 0 else torch.Generator().manual_seed(100 + rnd)
        row = forger(grads, ranks, 2, 7, gen)
        expected = reference(ranks, [g.double().numpy() for g in grads])
        assert forger.target == expected
        assert torch.equal(row, grads[ranks.index(expected)])


def test_after_warmup_the_target_is_fixed_even_when_projections_change():
    forger = MimicForger(warmup=1)
    g1 = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 0.1]])
    forger(g1, [7, 8, 9], 1, 4, torch.Generator().manual_seed(0))
    target = forger.target
    other = 8 if target == 7 else 7
    g2 = g1.clone()
    g2[[7, 8, 9].index(other)] *= 100.0
    assert torch.equal(forger(g2, [7, 8, 9], 1, 4, torch.Generator()), g2[[7, 8, 9].index(target)])


def test_absent_target_falls_back_to_the_largest_projection():
    forger = MimicForger(warmup=1)
    g1 = torch.tensor([[5.0, 0.0], [-5.0, 0.0], [0.0, 0.1]])
    forger(g1, [7, 8, 9], 1, 4, torch.Generator().manual_seed(0))
    z = forger.direction
    g2 = torch.tensor([[1.0, 0.0], [-2.0, 0.0]])
    row = forger(g2, [20, 21], 1, 3, torch.Generator())
    assert torch.equal(row, g2[mimic_target(g2, z)])
    assert forger.target in (7, 8)


def test_each_adversary_keeps_its_own_state():
    a = MimicClient.build_adversary(warmup=2, malicious_partition_ids={3})
    b = MimicClient.build_adversary(warmup=2, malicious_partition_ids={3})
    u = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    a(u, context([0, 1, 2, 3], [3]))
    assert a.forger.rounds == 1 and b.forger.rounds == 0


def test_zero_spread_gives_a_finite_copy():
    g = torch.ones(3, 4)
    forger = MimicForger()
    assert torch.equal(forger(g, [0, 1, 2], 1, 4, torch.Generator().manual_seed(0)), g[0])


@pytest.mark.parametrize("warmup", [0, -1, 1.5, True])
def test_bad_warmup_raises(warmup):
    with pytest.raises(ValueError, match="warmup"):
        MimicForger(warmup)


def test_mimic_fixed_copies_position_modulo_rows():
    g = torch.tensor([[1.0], [2.0], [3.0]])
    assert torch.equal(mimic_fixed(g), g[0])
    assert torch.equal(mimic_fixed(g, 4), g[1])
    with pytest.raises(ValueError, match="target"):
        mimic_fixed(g, -1)


def test_mimic2_adversary_copies_the_first_honest_worker():
    u = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))
    out = Mimic2Client.build_adversary(malicious_partition_ids={3, 8})(
        u, context([3, 4, 6, 8, 9], [0, 3])
    )
    assert torch.equal(out[0], u[1]) and torch.equal(out[3], u[1])
    out = Mimic2Client.build_adversary(target=1, malicious_partition_ids={3, 8})(
        u, context([3, 4, 6, 8, 9], [0, 3])
    )
    assert torch.equal(out[0], u[2])
