"""AlterMin: the targeted examples, the stealth term, and boosting's effect under averaging."""

import numpy as np
import pytest
import torch
from torch import nn

from clients.alter_min import ALTER_MIN_DISTANCE, AlterMinClient, distance_to, targeted_examples
from flsec_flower.app import registry
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.experiment import client_env
from flsec_flower.models import get_weights, set_weights
from tests.attack_env import toy_data, toy_env


def make_env(params=None, attack=None):
    params = {"count": 3, **(params or {})}
    return toy_env("alter_min", [0], params, attack, data=toy_data(size=4, scale=1.0))


def test_targeted_examples_are_seeded_and_of_the_source_class():
    y = torch.arange(40) % 10
    ids = targeted_examples(y, 3, 5, 3)
    assert len(set(ids.tolist())) == 3 and (y[ids] == 5).all()
    assert torch.equal(ids, targeted_examples(y, 3, 5, 3))
    assert len(targeted_examples(y, 3, None, 40)) == 40
    with pytest.raises(ValueError, match="count"):
        targeted_examples(y, 3, 5, 5)


def test_distance_to_the_benign_update_by_hand():
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
        model.bias.fill_(3.0)
    reference = [torch.zeros(1, 2), torch.zeros(1)]
    benign = [torch.tensor([[1.0, 0.0]]), torch.tensor([-1.0])]
    # (w - G) - benign = [0, 2], 4: norm sqrt(20)
    assert distance_to(reference, benign)(model).item() == pytest.approx(np.sqrt(20.0))


@pytest.mark.parametrize(
    ("params", "name"),
    [
        ({"target_class": 10}, "target_class"),
        ({"count": 5}, "count"),
        ({"rho": -1.0}, "rho"),
        ({"boost": 0.0}, "boost"),
        ({"malicious_steps": 0}, "malicious_steps"),
    ],
)
def test_bad_parameters_name_the_key(params, name):
    with pytest.raises(ConfigError, match=name):
        registry.build_client(make_env(params), True)


def test_inactive_rounds_are_honest_and_active_ones_report_the_distance():
    env = make_env(attack={"start_round": 2})
    client = registry.build_client(env, True)
    honest = registry.build_client(env, False)
    init = get_weights(client.model)
    sent, _, metrics = client.fit(init, {"server_round": 1})
    want = honest.fit(init, {"server_round": 1})[0]
    assert all(np.array_equal(a, b) for a, b in zip(sent, want, strict=True))
    assert ALTER_MIN_DISTANCE not in metrics
    sent, _, metrics = client.fit(init, {"server_round": 2})
    assert metrics[ALTER_MIN_DISTANCE] > 0


def test_stealth_term_pulls_the_update_toward_the_benign_one():
    far = registry.build_client(make_env({"rho": 0.0, "boost": 4.0}), True)
    near = registry.build_client(make_env({"rho": 5.0, "boost": 4.0}), True)
    init = get_weights(far.model)
    d_far = far.fit(init, {"server_round": 1})[2][ALTER_MIN_DISTANCE]
    d_near = near.fit(init, {"server_round": 1})[2][ALTER_MIN_DISTANCE]
    assert d_near < d_far


def test_explicit_boosting_carries_the_target_through_averaging():
    """Bhagoji et al.: one attacker among K averaged clients needs its malicious step boosted.

    Five clients of the synthetic data, one attacker, one FedAvg round from
    the same initial model: with the boost lambda = K the global model
    labels the targeted examples as the target, without it (lambda = 1) far
    fewer of them.
    """

    def global_backdoor(boost):
        cfg = from_dict(
            {
                "seed": 0,
                "data": {"dataset": "synthetic", "num_clients": 5},
                "model": {"name": "logreg"},
                "training": {"batch_size": 16, "lr": 0.1, "device": "cpu"},
                "attack": {
                    "name": "alter_min",
                    "malicious_ids": [0],
                    "params": {"boost": boost, "count": 5, "target_class": 0},
                },
            }
        )
        clients = [registry.build_client(client_env(cfg, pid), pid == 0) for pid in range(5)]
        init = get_weights(clients[1].model)
        replies = [c.fit(init, {"server_round": 1})[0] for c in clients]
        set_weights(clients[1].model, [np.mean(a, axis=0) for a in zip(*replies, strict=True)])
        metric = AlterMinClient.server_metrics(cfg, client_env(cfg, 0).dataset)
        return metric(clients[1].model)["backdoor_accuracy"]

    boosted, plain = global_backdoor(5.0), global_backdoor(1.0)
    assert boosted >= 0.8 and boosted > plain
