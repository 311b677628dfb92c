import numpy as np
import pytest
import torch
from torch import nn

from clients.fairness_attack import FairnessAttackClient, fairness_update
from clients.honest import HonestClient
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv, client_seed
from flsec_flower.models import get_weights, set_weights
from flsec_flower.training import train_local
from strategies.fedavg import mean


def make_env(params=None, attack=None, clients_per_round=None, malicious=(0,)):
    raw = {
        "rounds": 10,
        "data": {"num_clients": 4},
        "model": {"name": "logreg"},
        "training": {"batch_size": 8, "device": "cpu"},
        "attack": {
            "name": "fairness_attack",
            "malicious_ids": list(malicious),
            "params": params or {},
            **(attack or {}),
        },
    }
    if clients_per_round:
        raw["clients_per_round"] = clients_per_round
    cfg = from_dict(raw)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 4
    x = torch.rand(80, 6, generator=g)
    sex = (torch.arange(80) // 2) % 2
    ds = Dataset(
        "toy",
        x,
        y,
        x[:40].clone(),
        y[:40].clone(),
        num_classes=4,
        groups_train={"sex": sex},
        groups_test={"sex": sex[:40].clone()},
    )
    return ClientEnv(0, x[:12], y[:12], ds, cfg, torch.device("cpu"))


def test_formula_by_hand():
    # n = 10 + 10 = 20; v = (20 * 1 - 10 * 0.5) / 10
    assert fairness_update(1.0, 0.5, n0=10, num_clients=2, samples=10) == 1.5
    # k = 2 attackers of 10, 2 others of 20: n = 60; v = (60 * 2 - 40 * 1) / 20
    assert fairness_update(2.0, 1.0, n0=10, num_clients=4, samples=20, num_attackers=2) == 4.0
    # only attackers: v = m
    assert fairness_update(3.0, 7.0, n0=5, num_clients=3, samples=9, num_attackers=3) == 3.0


def test_weighted_fedavg_lands_on_the_target_when_the_prediction_is_right():
    rng = np.random.default_rng(0)
    m, u = torch.tensor(rng.normal(size=5)), torch.tensor(rng.normal(size=5))
    n0, ns, k, clients = 30.0, 50.0, 2, 7
    v = fairness_update(m, u, n0, clients, ns, k)
    updates = torch.stack([v] * k + [u] * (clients - k)).float()
    weights = torch.tensor([n0] * k + [ns] * (clients - k))
    assert torch.allclose(mean(updates, weights).update, m.float(), atol=1e-5)


def test_craft_is_the_global_model_plus_v():
    env = make_env({"target_classes": [1, 2]})
    client = registry.build_client(env, True)
    init = HonestClient(env).get_parameters({})
    weights, n, metrics = client.fit(init, {"server_round": 3})
    assert n == 12 and metrics["attack_active"] is True
    clean, _, _ = HonestClient(env).fit(init, {"server_round": 3})
    model = HonestClient(env).model
    set_weights(model, init)
    x, y = client.unfair_data()
    gen = torch.Generator().manual_seed(client_seed(env.cfg, 0, 3) + 1)
    train_local(model, x, y, env.cfg.training, gen)
    target = get_weights(model)
    for g, t, c, w in zip(init, target, clean, weights, strict=True):
        # K = 4 clients per round, n_s = n0 = 12: v = 4 m - 3 u
        want = g + 4 * (t - g) - 3 * (c - g)
        np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)


def test_unfair_data_keeps_only_the_target_classes():
    env = make_env({"target_classes": [1, 3], "unfair_size": 10})
    client = registry.build_client(env, True)
    x, y = client.unfair_data()
    assert len(y) == 10 and set(y.tolist()) <= {1, 3}
    assert torch.equal(x, client.unfair_data()[0])  # the same draw every round
    default = registry.build_client(make_env(), True)
    assert len(default.unfair_data()[1]) == 20  # N / num_clients
    assert set(default.unfair_data()[1].tolist()) <= {0, 1}


def test_group_mode_forces_the_group_label():
    env = make_env(
        {"group": {"attribute": "sex", "value": 0}, "forced_label": 3, "unfair_size": 80}
    )
    x, y = registry.build_client(env, True).unfair_data()
    ds = env.dataset
    index = [int(torch.nonzero((ds.x_train == row).all(1))[0]) for row in x]
    sex, true = ds.groups_train["sex"][index], ds.y_train[index]
    assert (y[sex == 0] == 3).all()
    assert torch.equal(y[sex == 1], true[sex == 1])


def test_inactive_rounds_are_honest():
    env = make_env(attack={"start_round": 5})
    init = HonestClient(env).get_parameters({})
    bad, _, metrics = registry.build_client(env, True).fit(init, {"server_round": 2})
    good, _, _ = HonestClient(env).fit(init, {"server_round": 2})
    assert metrics["attack_active"] is False
    assert all(np.array_equal(a, b) for a, b in zip(bad, good, strict=True))


class Constant(nn.Module):
    def __init__(self, label):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.label = label

    def forward(self, x):
        return nn.functional.one_hot(torch.full((len(x),), self.label), 4).float() + self.w


def test_server_metrics_target_and_other_accuracy():
    env = make_env({"target_classes": [0, 1]})
    metric = FairnessAttackClient.server_metrics(env.cfg, env.dataset)
    assert metric(Constant(0)) == {"target_accuracy": 0.5, "other_accuracy": 0.0}
    assert metric(Constant(3)) == {"target_accuracy": 0.0, "other_accuracy": 0.5}
    env = make_env({"group": {"attribute": "sex", "value": 1}})
    metric = FairnessAttackClient.server_metrics(env.cfg, env.dataset)
    # test labels 0..3 cycle; sex=1 rows are 2, 3, 6, 7, ... (labels 2 and 3)
    assert metric(Constant(2)) == {
        "target_accuracy": 0.5,
        "other_accuracy": 0.0,
        "attacked_group_accuracy": 0.5,
    }


def test_group_mode_headline_is_the_attacked_groups_accuracy():
    # sex=1 test rows carry labels 2 and 3; forcing label 2 attacks the label-3 members
    env = make_env({"group": {"attribute": "sex", "value": 1}, "forced_label": 2})
    metric = FairnessAttackClient.server_metrics(env.cfg, env.dataset)
    assert metric(Constant(2))["attacked_group_accuracy"] == 0.0
    assert metric(Constant(3))["attacked_group_accuracy"] == 1.0
    assert metric(Constant(3))["target_accuracy"] == 0.5


def test_estimates_default_to_clients_per_round_and_count_attackers():
    client = registry.build_client(make_env(clients_per_round=2, malicious=(0, 1)), True)
    assert client.num_clients_estimate == 2 and client.num_attackers == 1
    client = registry.build_client(make_env(malicious=(0, 1)), True)
    assert client.num_clients_estimate == 4 and client.num_attackers == 2


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"target_classes": [4]}, "target_classes"),
        ({"group": {"attribute": "race", "value": 0}}, "group"),
        ({"group": {"attribute": "sex"}}, "group"),
        ({"group": {"attribute": "sex", "value": 0}, "forced_label": 9}, "forced_label"),
        ({"num_clients_estimate": 0}, "num_clients_estimate"),
        ({"samples_estimate": -1.0}, "samples_estimate"),
        ({"unfair_size": 0}, "unfair_size"),
    ],
)
def test_bad_parameters_are_config_errors(params, name):
    with pytest.raises(ConfigError, match=rf"(\}}: |params\.){name}\b"):
        registry.build_client(make_env(params), True)
