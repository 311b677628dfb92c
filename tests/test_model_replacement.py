import math

import numpy as np
import pytest
import torch
from torch import nn

from clients.backdoor import BackdoorClient
from clients.honest import HonestClient
from clients.model_replacement import (
    ModelReplacementClient,
    SemanticModelReplacementClient,
    alpha_weighted,
    anomaly_loss,
    default_boost,
    replacement_weights,
    update_norm,
)
from clients.naive_poisoning import NaivePoisoningClient, SemanticNaivePoisoningClient
from clients.pixel_trojan import PixelTrojanClient
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, TrainingConfig, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv
from flsec_flower.params import ParamLayout
from flsec_flower.training import classification_loss, train_local
from strategies.fedavg import mean


def make_env(name="model_replacement", params=None, attack=None, **top):
    raw = {
        "rounds": 10,
        "data": {"num_clients": 4},
        "model": {"name": "logreg"},
        "training": {"batch_size": 8, "device": "cpu"},
        "attack": {"name": name, "malicious_ids": [0], "params": params or {}, **(attack or {})},
        **top,
    }
    cfg = from_dict(raw)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 10
    x = torch.rand(40, 1, 8, 8, generator=g) * 0.5
    ds = Dataset("toy", x, y, x.clone(), y.clone(), num_classes=10)
    return ClientEnv(0, x[:24], y[:24], ds, cfg, torch.device("cpu"))


def fit(client, init, server_round=1):
    weights, _, metrics = client.fit(init, {"server_round": server_round})
    return weights, metrics


def flat(arrays):
    return ParamLayout.of(arrays).flatten(arrays)


def test_replacement_weights_by_hand():
    g = [np.array([1.0, 2.0], np.float32), np.array(10, np.int64)]
    x = [np.array([1.5, 1.0], np.float32), np.array(11, np.int64)]
    out = replacement_weights(g, x, 10.0)
    assert out[0].tolist() == [6.0, -8.0] and out[0].dtype == np.float32
    assert out[1] == 20 and out[1].dtype == np.int64


@pytest.mark.parametrize(("n", "eta"), [(4, 1.0), (10, 0.5), (3, 2.0)])
def test_gamma_n_over_eta_replaces_the_global_model_under_fedavg(n, eta):
    rng = np.random.default_rng(n)
    g = [rng.normal(size=(3, 2)).astype(np.float32), rng.normal(size=2).astype(np.float32)]
    x = [a + rng.normal(size=a.shape).astype(np.float32) * 0.1 for a in g]
    submitted = replacement_weights(g, x, default_boost(n, eta))
    others = torch.tensor(rng.normal(size=(n - 1, 8)), dtype=torch.float32)
    others[-1] = -others[:-1].sum(0)  # the honest updates cancel
    updates = torch.cat([(flat(submitted) - flat(g))[None], others])
    new_global = flat(g) + eta * mean(updates).update
    torch.testing.assert_close(new_global, flat(x), rtol=1e-4, atol=1e-4)
    weighted = mean(updates, torch.full((n,), 17.0)).update  # equal sample counts
    torch.testing.assert_close(flat(g) + eta * weighted, flat(x), rtol=1e-4, atol=1e-4)


def test_default_gamma_and_split_among_attackers():
    client = registry.build_client(make_env(server_lr=0.5), True)
    assert client.update.gamma == 8.0  # n = 4 clients per round, eta = 0.5
    env = make_env(attack={"malicious_ids": [0, 1]}, clients_per_round=2)
    assert registry.build_client(env, True).update.gamma == 2.0  # 1 expected attacker of 2
    env = make_env(attack={"malicious_ids": [0, 1]})
    assert registry.build_client(env, True).update.gamma == 2.0  # 4 / (1 * 2)
    env = make_env(params={"split": False}, attack={"malicious_ids": [0, 1]})
    assert registry.build_client(env, True).update.gamma == 4.0
    assert registry.build_client(make_env(params={"gamma": 3.0}), True).update.gamma == 3.0


def test_client_submits_the_boosted_backdoored_model():
    env = make_env(params={"items_per_batch": 4})
    init = HonestClient(env).get_parameters({})
    boosted, metrics = fit(registry.build_client(env, True), init)
    naive, _ = fit(
        registry.build_client(make_env("naive_poisoning", {"items_per_batch": 4}), True), init
    )
    assert metrics["gamma"] == 4.0 and metrics["attack_active"] is True
    torch.testing.assert_close(
        flat(boosted) - flat(init), 4.0 * (flat(naive) - flat(init)), rtol=1e-4, atol=1e-5
    )
    honest, _ = fit(HonestClient(env), init)
    assert not np.array_equal(naive[0], honest[0])


def test_train_and_scale_hits_the_norm_bound():
    env = make_env(params={"mode": "train_and_scale", "norm_bound": 0.25})
    init = HonestClient(env).get_parameters({})
    weights, metrics = fit(registry.build_client(env, True), init)
    assert update_norm(init, weights) == pytest.approx(0.25, rel=1e-4)
    assert metrics["gamma"] > 0


def test_norm_bound_caps_the_replacement():
    env = make_env(params={"gamma": 1000.0, "norm_bound": 0.5})
    init = HonestClient(env).get_parameters({})
    weights, metrics = fit(registry.build_client(env, True), init)
    assert update_norm(init, weights) == pytest.approx(0.5, rel=1e-4)
    assert metrics["gamma"] < 1000.0


def test_single_shot_acts_in_one_round_only():
    env = make_env(attack={"start_round": 3, "single_shot": True})
    client = registry.build_client(env, True)
    init = HonestClient(env).get_parameters({})
    for r in (2, 3, 4):
        out, metrics = fit(client, init, r)
        honest, _ = fit(HonestClient(env), init, r)
        same = all(np.array_equal(a, b) for a, b in zip(out, honest, strict=True))
        assert same is (r != 3) and metrics["attack_active"] is (r == 3)
        assert ("gamma" in metrics) is (r == 3)


def test_anomaly_losses_by_hand():
    m = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[3.0, 4.0]]))
    ref = [torch.zeros(1, 2)]
    assert anomaly_loss("l2", ref)(m).item() == 5.0
    assert anomaly_loss("l2_squared", ref)(m).item() == 25.0
    assert anomaly_loss("cosine", ref, [torch.tensor([[4.0, -3.0]])])(m).item() == 1.0
    assert anomaly_loss("cosine", ref, [torch.tensor([[3.0, 4.0]])])(m).item() == pytest.approx(0)
    at_g = anomaly_loss("cosine", [m.weight.detach().clone()], [torch.ones(1, 2)])(m)
    at_g.backward()
    assert at_g.item() == 0.0 and torch.equal(m.weight.grad, torch.zeros(1, 2))
    with pytest.raises(ValueError, match="anomaly"):
        anomaly_loss("l1", ref)


def test_alpha_weighted_sgd_takes_the_papers_steps():
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    alpha = 0.3
    cfg = TrainingConfig(lr=0.1, momentum=0.9, weight_decay=1e-2, batch_size=16, local_epochs=3)
    start = nn.Linear(3, 2)
    ref_params = [p.detach().clone() for p in start.parameters()]

    paper = nn.Linear(3, 2)
    paper.load_state_dict(start.state_dict())
    opt = torch.optim.SGD(paper.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    ano = anomaly_loss("l2_squared", ref_params)
    for _ in range(3):
        opt.zero_grad()
        loss = alpha * classification_loss(paper(x), y) + (1 - alpha) * ano(paper)
        loss.backward()
        opt.step()

    ours = nn.Linear(3, 2)
    ours.load_state_dict(start.state_dict())
    w = (1 - alpha) / alpha
    train_local(
        ours,
        x,
        y,
        alpha_weighted(cfg, alpha),
        torch.Generator().manual_seed(0),
        lambda m: w * ano(m),
    )
    for a, b in zip(paper.parameters(), ours.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("anomaly", ["l2", "l2_squared", "cosine"])
def test_constrain_and_scale_stays_closer_to_the_global_model(anomaly):
    init = HonestClient(make_env()).get_parameters({})
    free, _ = fit(registry.build_client(make_env(params={"gamma": 1.0}), True), init)
    params = {"mode": "constrain_and_scale", "alpha": 0.05, "anomaly": anomaly, "gamma": 1.0}
    constrained, metrics = fit(registry.build_client(make_env(params=params), True), init)
    assert metrics["gamma"] == 1.0
    assert all(np.isfinite(a).all() for a in constrained)
    if anomaly == "cosine":
        assert not np.array_equal(constrained[0], free[0])
    else:
        assert update_norm(init, constrained) < update_norm(init, free)


def test_poison_lr_and_epochs_are_used():
    init = HonestClient(make_env()).get_parameters({})
    base, _ = fit(registry.build_client(make_env("naive_poisoning"), True), init)
    slow, _ = fit(
        registry.build_client(make_env("naive_poisoning", {"poison_lr": 1e-6}), True), init
    )
    longer, _ = fit(
        registry.build_client(make_env("naive_poisoning", {"poison_epochs": 3}), True), init
    )
    assert update_norm(init, slow) < 1e-3 * update_norm(init, base)
    assert update_norm(init, longer) > update_norm(init, base)


class Constant(nn.Module):
    def __init__(self, label):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.label = label

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.label), 10).float() + self.w


def test_server_metrics_follow_the_trigger():
    env = make_env(params={"target_class": 3, "pattern": "square"})
    metric = ModelReplacementClient.server_metrics(env.cfg, env.dataset)
    assert metric(Constant(3)) == {"backdoor_accuracy": 1.0}
    semantic = make_env("model_replacement_semantic", {"source_class": 1, "count": 4})
    metric = SemanticModelReplacementClient.server_metrics(semantic.cfg, semantic.dataset)
    assert metric(Constant(2)) == {"backdoor_accuracy": 1.0}
    assert metric(Constant(1)) == {"backdoor_accuracy": 0.0}


def test_semantic_variants_and_registry():
    params = {"source_class": 1, "count": 4, "gamma": 2.0, "items_per_batch": 4}
    env = make_env("model_replacement_semantic", params)
    client = registry.build_client(env, True)
    assert isinstance(client, SemanticModelReplacementClient) and client.update.gamma == 2.0
    init = HonestClient(env).get_parameters({})
    weights, metrics = fit(client, init)
    assert metrics["gamma"] == 2.0 and all(np.isfinite(a).all() for a in weights)
    naive = make_env("naive_poisoning_semantic", {"count": 4, "items_per_batch": 4})
    assert isinstance(registry.build_client(naive, True), SemanticNaivePoisoningClient)
    # composed, not inherited: the naive attacker reuses the pixel trojan's data part
    assert NaivePoisoningClient.backdoor_type is PixelTrojanClient.backdoor_type
    for cls in (NaivePoisoningClient, ModelReplacementClient, SemanticModelReplacementClient):
        assert cls.__bases__ == (BackdoorClient,)
    assert "poison_lr" in ModelReplacementClient.attack_params(env.cfg)


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"mode": "boost"}, "mode"),
        ({"mode": "train_and_scale"}, "norm_bound"),
        ({"gamma": -1.0}, "gamma"),
        ({"gamma": math.inf}, "gamma"),
        ({"norm_bound": 0.0}, "norm_bound"),
        ({"alpha": 0.0}, "alpha"),
        ({"anomaly": "l1"}, "anomaly"),
        ({"poison_lr": 0.0}, "poison_lr"),
        ({"poison_epochs": 0}, "poison_epochs"),
        ({"pattern": "star"}, "pattern"),
        ({"boost": 2.0}, "boost"),
    ],
)
def test_bad_parameters_are_config_errors(params, name):
    with pytest.raises(ConfigError, match=rf"(\}}: |params\.){name}\b"):
        registry.build_client(make_env(params=params), True)
