import math

import numpy as np
import pytest
import torch

from clients.gaussian import GaussianClient, gaussian_weights
from clients.honest import HonestClient
from clients.same_value import SameValueClient, same_value_weights
from clients.sign_flip import SignFlipClient, sign_flip
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv
from flsec_flower.params import ParamLayout


def make_env(name, params=None, attack=None):
    raw = {
        "rounds": 10,
        "data": {"num_clients": 4},
        "model": {"name": "logreg"},
        "training": {"batch_size": 8, "device": "cpu"},
        "attack": {"name": name, "malicious_ids": [0], "params": params or {}, **(attack or {})},
    }
    cfg = from_dict(raw)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(24) % 3
    x = torch.rand(24, 1, 4, 4, generator=g)
    ds = Dataset("toy", x, y, x[:6].clone(), y[:6].clone(), num_classes=3)
    return ClientEnv(0, x, y, ds, cfg, torch.device("cpu"))


def fit(client, init, server_round=1):
    weights, _, metrics = client.fit(init, {"server_round": server_round})
    return weights, metrics


def server_update(init, weights):
    """The update row the strategy base computes: flatten(weights) - flatten(global)."""
    layout = ParamLayout.of(init)
    return layout.flatten(weights) - layout.flatten(init)


def test_sign_flip_by_hand_and_with_integer_buffers():
    g = [np.array([1.0, 2.0], np.float32), np.array(4, np.int64)]
    x = [np.array([1.5, 1.0], np.float32), np.array(5, np.int64)]
    out = sign_flip(g, x)
    assert out[0].tolist() == [0.5, 3.0] and out[0].dtype == np.float32
    assert out[1] == 3 and out[1].dtype == np.int64
    assert sign_flip(g, x, scale=4.0)[0].tolist() == [-1.0, 6.0]


def test_sign_flip_client_returns_exactly_minus_the_honest_update():
    env = make_env("sign_flip")
    init = HonestClient(env).get_parameters({})
    bad, metrics = fit(registry.build_client(env, True), init)
    good, _ = fit(HonestClient(env), init)
    assert metrics["attack_active"] is True
    torch.testing.assert_close(
        server_update(init, bad), -server_update(init, good), rtol=0, atol=1e-6
    )


def test_sign_flip_scale_and_schedule():
    env = make_env("sign_flip", {"scale": 3.0}, {"start_round": 2, "end_round": 2})
    init = HonestClient(env).get_parameters({})
    client = registry.build_client(env, True)
    good, _ = fit(HonestClient(env), init, 2)
    bad, _ = fit(client, init, 2)
    torch.testing.assert_close(
        server_update(init, bad), -3.0 * server_update(init, good), rtol=1e-5, atol=1e-5
    )
    for r in (1, 3):
        honest, _ = fit(HonestClient(env), init, r)
        out, metrics = fit(client, init, r)
        assert metrics["attack_active"] is False
        assert all(np.array_equal(a, b) for a, b in zip(out, honest, strict=True))


def test_gaussian_weights_statistics_and_buffers():
    g = [np.full(200_000, 3.0, np.float32), np.array([7], np.int64)]
    out = gaussian_weights(g, 200.0, np.random.default_rng(0))
    u = out[0].astype(np.float64) - 3.0
    assert abs(u.mean()) < 2.0 and abs(u.std() - 200.0) < 2.0
    assert out[1].tolist() == [7] and out[1].dtype == np.int64


def test_gaussian_client_skips_training_and_is_seeded():
    env = make_env("gaussian", {"sigma": 5.0})
    init = HonestClient(env).get_parameters({})
    client = registry.build_client(env, True)
    a, metrics = fit(client, init, 1)
    b, _ = fit(registry.build_client(env, True), init, 1)
    c, _ = fit(client, init, 2)
    assert math.isnan(metrics["train_loss"])
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    u = server_update(init, a)
    assert 3.0 < float(u.std()) < 7.0
    assert client.attack.sigma == 5.0 and GaussianClient(env).attack.sigma == 200.0


def test_same_value_is_sigma_everywhere():
    g = [np.array([0.0, 1.0], np.float32), np.array(3, np.int64)]
    out = same_value_weights(g, 100.0)
    assert out[0].tolist() == [100.0, 101.0] and out[1] == 3
    env = make_env("same_value")
    init = HonestClient(env).get_parameters({})
    weights, metrics = fit(registry.build_client(env, True), init)
    u = server_update(init, weights)
    torch.testing.assert_close(u, torch.full_like(u, 100.0), rtol=0, atol=1e-5)
    assert math.isnan(metrics["train_loss"])
    assert SameValueClient(env).attack.sigma == 100.0


def test_inactive_noise_attacks_train_honestly():
    for name in ("gaussian", "same_value"):
        env = make_env(name, attack={"start_round": 3})
        init = HonestClient(env).get_parameters({})
        out, metrics = fit(registry.build_client(env, True), init, 2)
        honest, _ = fit(HonestClient(env), init, 2)
        assert metrics["attack_active"] is False and not math.isnan(metrics["train_loss"])
        assert all(np.array_equal(a, b) for a, b in zip(out, honest, strict=True))


@pytest.mark.parametrize(
    ("name", "params", "bad"),
    [
        ("sign_flip", {"scale": 0.0}, "scale"),
        ("sign_flip", {"scale": float("inf")}, "scale"),
        ("gaussian", {"sigma": -1.0}, "sigma"),
        ("same_value", {"sigma": float("nan")}, "sigma"),
        ("gaussian", {"std": 1.0}, "std"),
    ],
)
def test_bad_parameters_are_config_errors(name, params, bad):
    with pytest.raises(ConfigError, match=rf"(\}}: |params\.){bad}\b"):
        registry.build_client(make_env(name, params), True)


def test_classes_are_registered():
    assert registry.attack_class("sign_flip") is SignFlipClient
    assert registry.attack_class("gaussian") is GaussianClient
    assert registry.attack_class("same_value") is SameValueClient
