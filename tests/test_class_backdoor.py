"""DiverseFL's class backdoor: relabel one class, boost the update, score both tasks."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from clients.class_backdoor import ClassBackdoorClient, class_backdoor_metric
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv


def make_env(params=None, attack=None):
    raw = {
        "rounds": 10,
        "data": {"num_clients": 4},
        "model": {"name": "logreg"},
        "training": {"batch_size": 8, "device": "cpu"},
        "attack": {
            "name": "class_backdoor",
            "malicious_ids": [0],
            "params": params or {},
            **(attack or {}),
        },
    }
    cfg = from_dict(raw)
    y = torch.arange(30) % 10
    x = torch.rand(30, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    return ClientEnv(0, x, y, Dataset("toy", x, y, x[:10], y[:10], num_classes=10), cfg, "cpu")


def test_source_is_relabelled_target_only_while_active():
    env = make_env(attack={"start_round": 2, "end_round": 2})
    client = ClassBackdoorClient(env)
    _, y = client.training_data(2)
    want = env.y.clone()
    want[env.y == 3] = 4
    assert torch.equal(y, want)
    assert torch.equal(client.training_data(3)[1], env.y)


def test_update_is_boosted_by_gamma_while_active():
    client = ClassBackdoorClient(make_env({"gamma": 7.0}, {"start_round": 2, "end_round": 2}))
    g, x = [np.array([1.0, -2.0], np.float32)], [np.array([1.5, -2.5], np.float32)]
    # G + 7 (X - G) = [1 + 3.5, -2 - 3.5]
    np.testing.assert_allclose(client.craft(g, x, 2)[0], [4.5, -5.5])
    assert client.craft(g, x, 3) is x


def test_metric_scores_the_source_images_and_the_other_classes_by_hand():
    model = nn.Linear(1, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0], [-1.0], [0.0]]))  # x > 0 -> 0, x < 0 -> 1, 0 -> 2
    x = torch.tensor([[1.0], [-1.0], [0.0], [-1.0], [1.0], [0.0]])
    y = torch.tensor([0, 0, 2, 2, 2, 1])
    # source 2 (rows 2-4) predicted 2, 1, 0: one of three is the target 1
    # main task (rows 0, 1, 5: labels 0, 0, 1, predicted 0, 1, 2): one of three right
    got = class_backdoor_metric(x, y, source=2, target=1, batch_size=2)(model)
    assert got == pytest.approx({"backdoor_accuracy": 1 / 3, "main_accuracy": 1 / 3})
    none = class_backdoor_metric(x[:2], y[:2], source=2, target=1)(model)
    assert math.isnan(none["backdoor_accuracy"]) and none["main_accuracy"] == 0.5


def test_server_metric_reads_the_configured_classes():
    env = make_env({"source_class": 1, "target_class": 0})
    metric = ClassBackdoorClient.server_metrics(env.cfg, env.dataset)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.eye(10)[0])  # always predicts 0
    # test set: classes 0..9 once; the one 1 is predicted 0 (hit); of nine others only 0 is right
    assert metric(model) == pytest.approx({"backdoor_accuracy": 1.0, "main_accuracy": 1 / 9})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"gamma": 0.0}, "gamma"),
        ({"source_class": 10}, "source_class"),
        ({"target_class": 3}, "target_class"),
        ({"mapping": {1: 2}}, "mapping"),
    ],
)
def test_bad_parameters_name_the_key(params, message):
    env = make_env(params)
    with pytest.raises((ConfigError, ValueError), match=message):
        registry.build_client(env, malicious=True)
