"""DBA: the layout of the local triggers, each attacker's poisoning, and the paper's property."""

import numpy as np
import pytest
import torch
from torch import nn

from clients.attack import ACTIVE_TAG
from clients.dba import (
    DBA_PART,
    DbaClient,
    DistributedTrigger,
    attacker_part,
    dba_masks,
    single_shot_round,
)
from clients.poisoned_data import PoisonedDataset
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import client_env, malicious_ids
from flsec_flower.models import get_weights, set_weights
from tests.attack_env import toy_data, toy_env


def make_env(params=None, partition_id=0, n=40, attack=None):
    data = toy_data(n)
    return toy_env(
        "dba", [1, 4, 6, 7], params, attack, num_clients=8, partition_id=partition_id, data=data
    )


def test_default_layout_is_the_authors_mnist_triggers():
    assert dba_masks((1, 28, 28)) == [
        [[0, 0], [0, 1], [0, 2], [0, 3]],
        [[0, 6], [0, 7], [0, 8], [0, 9]],
        [[3, 0], [3, 1], [3, 2], [3, 3]],
        [[3, 6], [3, 7], [3, 8], [3, 9]],
    ]
    small = dba_masks((1, 8, 8))  # bars shortened to fit 8 columns
    assert small[1] == [[0, 5], [0, 6], [0, 7]] and small[2] == [[3, 0], [3, 1], [3, 2]]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"parts": 0}, "parts"),
        ({"size": 5}, "size"),
        ({"parts": 8}, "row_gap"),
        ({"offset": [1]}, "offset"),
    ],
)
def test_layouts_that_do_not_fit_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        dba_masks((1, 8, 8), **kwargs)


def test_each_attacker_stamps_only_its_own_part():
    parts = [attacker_part(make_env().cfg, pid, 4) for pid in (1, 4, 6, 7)]
    assert parts == [0, 1, 2, 3]
    env = make_env({"poison_fraction": 0.5, "target_class": 7}, partition_id=6)
    client = registry.build_client(env, True)
    x, y = client.training_data(1)
    poisoned = torch.nonzero((x != env.x).flatten(1).any(1)).flatten()
    assert len(poisoned) == 20  # floor(0.5 * 40)
    assert (y[poisoned] == 7).all()
    changed = {tuple(p) for p in torch.nonzero((x != env.x)[poisoned, 0].any(0)).tolist()}
    assert changed == {(3, 0), (3, 1), (3, 2)}  # local trigger 2 on 8x8 images
    assert client.fit_metrics(1)[DBA_PART] == 2


def test_global_trigger_is_the_union_and_local_is_a_dataset_wrapper():
    dba = DistributedTrigger(target_class=3, poison_fraction=1.0)
    x = dba.global_trigger(torch.zeros(1, 1, 8, 8))
    assert int(x.sum()) == 12
    assert x[0, 0, 0].tolist() == [1, 1, 1, 0, 0, 1, 1, 1] and x[0, 0, 1].sum() == 0
    base = [(torch.zeros(1, 8, 8), 0)]
    xs, ys = PoisonedDataset(base, dba.local(3, (1, 8, 8)))[0]
    assert int(ys) == 3 and xs[0, 3, 5:].tolist() == [1, 1, 1] and int(xs.sum()) == 3


def test_bad_parameters_name_the_key():
    with pytest.raises(ConfigError, match="local_masks"):
        registry.build_client(make_env({"parts": 2, "local_masks": [[[0, 0]]]}), True)
    with pytest.raises(ConfigError, match="target_class"):
        registry.build_client(make_env({"target_class": 10}), True)
    with pytest.raises(ConfigError, match="boost"):
        registry.build_client(make_env({"boost": float("nan")}), True)
    for interval in (0, True, 1.5, "2"):
        with pytest.raises(ConfigError, match="single_shot_interval"):
            registry.build_client(make_env({"single_shot_interval": interval}), True)
    # the last attacker (rank 3) would poison in round 3 + 3 * 2 = 9, after end_round 8
    late = make_env({"single_shot_interval": 2}, 7, attack={"start_round": 3, "end_round": 8})
    with pytest.raises(ConfigError, match=r"single_shot_interval.*round 9"):
        registry.build_client(late, True)


def test_single_shot_each_attacker_poisons_in_its_own_round():
    """A-S: ranks 0..3 (ids 1, 4, 6, 7) poison in rounds 3, 5, 7, 9; A-M: all in 3..10."""
    single = {"single_shot_interval": 2}
    rounds = {}
    for pid in (1, 4, 6, 7):
        client = registry.build_client(make_env(single, pid, attack={"start_round": 3}), True)
        rounds[pid] = [r for r in range(1, 11) if client.active(r)]
        assert single_shot_round(client.env.cfg, pid, 2) == rounds[pid][0]
        shot = rounds[pid][0]
        assert client.fit_metrics(shot)[ACTIVE_TAG] and not client.fit_metrics(shot + 1)[ACTIVE_TAG]
        x, _ = client.training_data(shot + 1)
        assert torch.equal(x, client.env.x)  # honest outside its round
    assert rounds == {1: [3], 4: [5], 6: [7], 7: [9]}
    every = registry.build_client(make_env(None, 6, attack={"start_round": 3}), True)
    assert [r for r in range(1, 11) if every.active(r)] == list(range(3, 11))


def test_server_metric_by_hand():
    """A model that votes the target when local trigger 0's pixels are lit."""
    env = make_env({"target_class": 1})
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].bias[0] = 0.5
        model[1].weight[1, :3] = 1.0  # row 0, columns 0..2: local trigger 0
    x = torch.zeros(5, 1, 8, 8)
    y = torch.zeros(5, dtype=torch.long)
    ds = Dataset("toy", x, y, x, y, num_classes=10)
    got = DbaClient.server_metrics(env.cfg, ds)(model)
    assert got == {
        "backdoor_accuracy": 1.0,
        "backdoor_accuracy_local_0": 1.0,
        "backdoor_accuracy_local_1": 0.0,
        "backdoor_accuracy_local_2": 0.0,
        "backdoor_accuracy_local_3": 0.0,
    }


def test_boost_scales_the_update():
    env = make_env({"boost": 3.0}, partition_id=1)
    client = registry.build_client(env, True)
    init = get_weights(client.model)
    plain = registry.build_client(make_env(partition_id=1), True)
    sent = client.fit(init, {"server_round": 1})[0]
    honest = plain.fit(init, {"server_round": 1})[0]
    for g, s, h in zip(init, sent, honest, strict=True):
        np.testing.assert_allclose(s - g, 3.0 * (h - g), rtol=1e-5, atol=1e-6)


def test_combined_trigger_beats_every_local_trigger():
    """Xie et al.'s finding: the assembled global trigger is the stronger backdoor.

    Eight clients of the synthetic 8x8 data (four DBA attackers, one local
    trigger each), three FedAvg rounds of a logistic regression; no attacker
    ever trains on the global trigger. (Seeds 0..3 all hold: global 1.0,
    0.99, 0.69, 0.92 against a best local trigger of 0.93, 0.69, 0.47, 0.84.)
    """
    cfg = from_dict(
        {
            "seed": 1,
            "data": {"dataset": "synthetic", "num_clients": 8},
            "model": {"name": "logreg"},
            "training": {"batch_size": 16, "lr": 0.2, "local_epochs": 1, "device": "cpu"},
            "attack": {"name": "dba", "num_malicious": 4, "params": {"target_class": 0}},
        }
    )
    attackers = malicious_ids(cfg)
    clients = [registry.build_client(client_env(cfg, pid), pid in attackers) for pid in range(8)]
    weights = get_weights(clients[0].model)
    for server_round in range(1, 4):
        replies = [c.fit(weights, {"server_round": server_round})[0] for c in clients]
        weights = [np.mean(layer, axis=0) for layer in zip(*replies, strict=True)]
    model = clients[0].model
    set_weights(model, weights)
    got = DbaClient.server_metrics(cfg, client_env(cfg, 0).dataset)(model)
    local = [got[f"backdoor_accuracy_local_{k}"] for k in range(4)]
    assert got["backdoor_accuracy"] > max(local)
    assert got["backdoor_accuracy"] >= 0.5
