import numpy as np
import pytest
import torch

from clients.honest import HonestClient
from clients.label_flip import LabelFlipClient, flip_labels
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv


def make_env(attack=None, classes=10, n=30):
    raw = {
        "rounds": 10,
        "data": {"num_clients": 4},
        "model": {"name": "logreg"},
        "training": {"batch_size": 8, "device": "cpu"},
        "attack": {"name": "label_flip", "malicious_ids": [0], **(attack or {})},
    }
    cfg = from_dict(raw)
    g = torch.Generator().manual_seed(0)
    y = torch.arange(n) % classes
    x = torch.rand(n, 1, 4, 4, generator=g)
    ds = Dataset("toy", x, y, x[:10], y[:10], num_classes=classes)
    return ClientEnv(0, x, y, ds, cfg, torch.device("cpu"))


@pytest.mark.parametrize("classes", [2, 3, 10])
def test_reverse_maps_every_class(classes):
    y = torch.arange(classes)
    assert flip_labels(y, classes).tolist() == [classes - 1 - c for c in range(classes)]


def test_mapping_maps_listed_classes_and_keeps_the_rest():
    y = torch.tensor([0, 1, 2, 3, 4, 1, 3])
    assert flip_labels(y, 5, {1: 4, 3: 0}).tolist() == [0, 4, 2, 0, 4, 4, 0]
    assert y.tolist() == [0, 1, 2, 3, 4, 1, 3]  # not modified in place


def test_client_flips_only_inside_the_schedule():
    env = make_env({"start_round": 3, "end_round": 4})
    client = LabelFlipClient(env)
    for r in range(1, 7):
        x, y = client.training_data(r)
        assert x is env.x
        want = 9 - env.y if r in (3, 4) else env.y
        assert torch.equal(y, want), r
    assert client.fit_metrics(3) == {"malicious": True, "attack_active": True}
    assert client.fit_metrics(5)["attack_active"] is False


def test_single_shot_schedule():
    env = make_env({"start_round": 2, "single_shot": True})
    client = LabelFlipClient(env)
    assert [client.active(r) for r in range(1, 5)] == [False, True, False, False]


def test_mapping_from_config_strings_and_errors():
    env = make_env({"params": {"mapping": {"7": 1}}})
    client = registry.build_client(env, True)
    assert isinstance(client, LabelFlipClient)
    assert client.mapping == {7: 1}
    _, y = client.training_data(1)
    assert torch.equal(y, torch.where(env.y == 7, 1, env.y))
    with pytest.raises(ConfigError, match=r"\}: mapping: "):
        registry.build_client(make_env({"params": {"mapping": {0: 10}}}), True)
    with pytest.raises(ConfigError, match=r"\}: mapping: "):
        registry.build_client(make_env({"params": {"mapping": {"a": 1}}}), True)
    with pytest.raises(ConfigError, match="unknown parameter"):
        registry.build_client(make_env({"params": {"flip": True}}), True)


def test_fit_equals_honest_training_on_flipped_labels():
    env = make_env()
    init = HonestClient(env).get_parameters({})
    weights, n, metrics = LabelFlipClient(env).fit(init, {"server_round": 1})
    flipped = ClientEnv(0, env.x, 9 - env.y, env.dataset, env.cfg, env.device)
    want, _, _ = HonestClient(flipped).fit(init, {"server_round": 1})
    honest, _, _ = HonestClient(env).fit(init, {"server_round": 1})
    assert n == 30 and metrics["attack_active"] is True
    for a, b in zip(weights, want, strict=True):
        assert np.array_equal(a, b)
    assert not all(np.array_equal(a, b) for a, b in zip(weights, honest, strict=True))
