import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.supercore.differential_privacy import clip_inputs_inplace

from flsec_flower.aggregation import RoundContext
from flsec_flower.app.registry import build_strategy
from flsec_flower.config import ConfigError, StrategyConfig, WrapperConfig
from strategies import DPNoise, FedAvg, NormClip
from strategies._linalg import row_norms
from strategies.dp_noise import gaussian_noise
from strategies.norm_clip import clip_norms


def ctx_for(n, seed=0):
    return RoundContext(
        server_round=1,
        partition_ids=list(range(n)),
        num_examples=torch.ones(n),
        global_params=torch.zeros(1),
        generator=torch.Generator().manual_seed(seed),
    )


def test_clip_by_hand():
    u = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0], [0.0, -2.0]])
    out = clip_norms(u, max_norm=1.0)
    expected = torch.tensor([[0.6, 0.8], [0.3, 0.4], [0.0, 0.0], [0.0, -1.0]])
    assert torch.allclose(out, expected)
    assert row_norms(out).tolist() == pytest.approx([1.0, 0.5, 0.0, 1.0])


def test_clip_equals_flowers_flatclip():
    rng = np.random.default_rng(0)
    for scale in (0.01, 1.0, 50.0):
        u = (rng.normal(size=(6, 40)) * scale).astype(np.float32)
        ours = clip_norms(torch.from_numpy(u), max_norm=2.5).numpy()
        for i in range(6):
            theirs = [u[i, :25].copy(), u[i, 25:].copy()]  # Flower clips a list of arrays
            clip_inputs_inplace(theirs, 2.5)
            np.testing.assert_allclose(ours[i], np.concatenate(theirs), rtol=1e-5, atol=1e-7)


def test_huge_rows_are_clipped_to_the_bound_and_stay_finite():
    u = torch.ones((3, 1000))
    u[1] = 1e30
    u[2] = -3e38
    out = clip_norms(u, max_norm=5.0)
    assert torch.isfinite(out).all()
    assert row_norms(out).tolist() == pytest.approx([5.0, 5.0, 5.0], rel=1e-5)


def test_norm_clip_wrapper_is_mean_of_clipped_rows():
    rng = np.random.default_rng(1)
    u = torch.from_numpy((rng.normal(size=(5, 8)) * 3).astype(np.float32))
    wrapped = NormClip(FedAvg(weighted=False, device="cpu"), max_norm=1.5, device="cpu")
    agg = wrapped.aggregate_updates(u, ctx_for(5))
    assert torch.allclose(agg.update, clip_norms(u, 1.5).mean(dim=0))
    assert agg.selected == [0, 1, 2, 3, 4]


def test_noise_is_sigma_times_the_generators_normals():
    g = torch.arange(5, dtype=torch.float32)
    noisy = gaussian_noise(g, 0.25, torch.Generator().manual_seed(3))
    expected = g + 0.25 * torch.randn(5, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(noisy, expected)
    assert torch.equal(gaussian_noise(g, 0.0, torch.Generator().manual_seed(3)), g)


def test_noise_has_standard_deviation_sigma():
    noisy = gaussian_noise(torch.zeros(200_000), 0.1, torch.Generator().manual_seed(0))
    assert float(noisy.std()) == pytest.approx(0.1, rel=0.02)
    assert abs(float(noisy.mean())) < 0.002


def test_dp_wrapper_same_seed_same_result_and_selection_passes():
    rng = np.random.default_rng(2)
    u = torch.from_numpy(rng.normal(size=(4, 16)).astype(np.float32))
    wrapped = DPNoise(FedAvg(weighted=False, device="cpu"), sigma=0.5, device="cpu")
    a = wrapped.aggregate_updates(u, ctx_for(4, seed=7))
    b = wrapped.aggregate_updates(u, ctx_for(4, seed=7))
    c = wrapped.aggregate_updates(u, ctx_for(4, seed=8))
    assert torch.equal(a.update, b.update)
    assert not torch.equal(a.update, c.update)
    expected = u.mean(dim=0) + 0.5 * torch.randn(16, generator=torch.Generator().manual_seed(7))
    assert torch.allclose(a.update, expected)
    assert a.selected == [0, 1, 2, 3]


def test_norm_bound_plus_weak_dp_through_aggregate_fit():
    rng = np.random.default_rng(3)
    shapes = [(2, 3), (4,)]
    init = [np.zeros(s, np.float32) for s in shapes]
    updates = [[rng.normal(size=s).astype(np.float32) * 10 for s in shapes] for _ in range(4)]
    updates[3] = [np.full(s, 1e30, np.float32) for s in shapes]  # a huge attacker

    def run(seed, sigma):
        cfg = StrategyConfig(
            name="fedavg",
            params={"weighted": False},
            wrappers=[
                WrapperConfig("norm_clip", {"max_norm": 2.0}),
                WrapperConfig("dp_noise", {"sigma": sigma}),
            ],
        )
        strategy = build_strategy(
            cfg, device="cpu", seed=seed, initial_parameters=ndarrays_to_parameters(init)
        )
        strategy.initialize_parameters(None)
        results = [
            (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(p), 5, {"partition_id": i}))
            for i, p in enumerate(updates)
        ]
        params, _ = strategy.aggregate_fit(1, results, [])
        return np.concatenate([a.ravel() for a in parameters_to_ndarrays(params)]), strategy

    flat = np.stack([np.concatenate([a.ravel() for a in p]) for p in updates])
    clipped = clip_norms(torch.from_numpy(flat), 2.0).numpy()
    noiseless, strategy = run(0, 0.0)
    assert isinstance(strategy, DPNoise) and isinstance(strategy.inner, NormClip)
    np.testing.assert_allclose(noiseless, clipped.mean(axis=0), rtol=1e-5, atol=1e-6)
    assert np.linalg.norm(noiseless) <= 2.0 + 1e-5
    first, _ = run(1, 0.1)
    again, _ = run(1, 0.1)
    np.testing.assert_array_equal(first, again)
    assert np.isfinite(first).all() and not np.allclose(first, noiseless)
    assert strategy.diagnostics[1].selected == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("cls", "name", "bad"),
    [
        (NormClip, "max_norm", 0.0),
        (NormClip, "max_norm", -1.0),
        (NormClip, "max_norm", float("inf")),
        (DPNoise, "sigma", -0.1),
        (DPNoise, "sigma", float("nan")),
        (DPNoise, "sigma", "0.1"),
    ],
)
def test_bad_parameters_raise(cls, name, bad):
    with pytest.raises(ValueError, match=name):
        cls(FedAvg(device="cpu"), device="cpu", **{name: bad})


def test_registry_requires_the_bound_and_sigma():
    for wrapper in ("norm_clip", "dp_noise"):
        cfg = StrategyConfig(name="fedavg", wrappers=[WrapperConfig(wrapper, {})])
        with pytest.raises(ConfigError, match=r"wrappers\[0\]"):
            build_strategy(cfg, device="cpu")
