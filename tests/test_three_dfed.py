"""3DFed: zero-sum masks on the output rows, indicators read back, and masks that pass FoolsGold."""

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from clients.three_dfed import (
    ACCEPTED,
    ALPHA,
    WEAK_DP,
    ThreeDFedClient,
    indicator_positions,
    mask_scale,
    mask_support,
    output_layer,
    read_indicators,
    tune_alpha,
    zero_sum_masks,
)
from flsec_flower.app import registry
from flsec_flower.client_state import ClientState
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv
from flsec_flower.models import build_model, get_weights
from strategies.foolsgold import foolsgold_weights

ATTACKERS = [1, 3, 4]


def make_env(params=None, partition_id=1, n=16):
    cfg = from_dict(
        {
            "data": {"num_clients": 6},
            "model": {"name": "logreg"},
            "training": {"batch_size": 8, "device": "cpu"},
            "attack": {"name": "three_dfed", "malicious_ids": ATTACKERS, "params": params or {}},
        }
    )
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(partition_id)) * 0.5
    ds = Dataset("toy", x, y, x.clone(), y.clone(), num_classes=10)
    return ClientEnv(partition_id, x, y, ds, cfg, torch.device("cpu"))


def initial_weights():
    env = make_env()
    return get_weights(build_model("logreg", env.dataset.input_shape, 10, env.cfg.seed))


def attack_round(params, weights, server_round, states):
    """Every attacker's reply to ``weights`` (a fresh client per message, as Flower builds)."""
    replies = []
    for pid in ATTACKERS:
        client = registry.build_client(make_env(params, pid), True)
        client.state = states[pid]
        replies.append(client.fit(weights, {"server_round": server_round}))
    return replies


def test_zero_sum_masks_cancel():
    masks = zero_sum_masks(5, 4, 0.5, np.random.default_rng(1))
    assert masks.shape == (4, 5) and (masks != 0).all()
    np.testing.assert_allclose(masks.sum(axis=0), 0.0, atol=1e-12)
    z = np.random.default_rng(1).standard_normal((4, 5))  # by hand: 0.5 (z_r - mean z)
    np.testing.assert_allclose(masks, 0.5 * (z - z.mean(axis=0)))
    assert (zero_sum_masks(2, 1, 0.5, np.random.default_rng(1)) == 0).all()


def test_mask_support_is_the_output_rows_of_the_chosen_neurons():
    weights = [np.zeros((5, 4)), np.zeros(5), np.zeros((3, 5)), np.zeros(3)]
    assert output_layer(weights, 3) == (2, 3)
    support = mask_support(weights, 3, [0, 2])
    assert not support[0].any() and not support[1].any()
    assert support[2].astype(int).tolist() == [[1] * 5, [0] * 5, [1] * 5]
    assert support[3].tolist() == [True, False, True]
    assert output_layer([np.zeros((3, 5))], 3) == (0, None)
    with pytest.raises(ValueError, match="output layer"):
        output_layer([np.zeros((4, 5))], 3)


def test_indicators_are_the_smallest_global_changes_outside_the_masks():
    change = np.array([[0.2, -0.05], [0.0, np.nan], [0.3, 0.05]])
    excluded = np.array([[False, False], [True, False], [False, False]])  # the 0.0 is masked
    # |change| outside the mask: 0.2, 0.05, nan (largest), 0.3, 0.05 (tie: by position)
    assert indicator_positions(change, excluded, 5).tolist() == [1, 5, 0, 4, 3]
    with pytest.raises(ValueError, match="mask_neurons"):
        indicator_positions(change, excluded, 6)


def test_reading_and_tuning_by_hand():
    # f = [0.2, 0.15, 0.1, 0.0]: 0.8 * max = 0.16, tau = 1e-4
    accept, weak = read_indicators(np.array([0.2, 0.15, 0.1, 0.0]), 1e-4)
    assert (accept, weak) == (["a", "c", "c", "r"], False)
    assert read_indicators(np.array([0.2, -0.01]), 1e-4) == ([], True)  # noise added
    rng = np.random.default_rng(3)
    expected = float(np.random.default_rng(3).uniform(0.5, 1.0))
    assert tune_alpha(0.3, accept, False, 0.5, rng) == expected  # 1 of 4 accepted: redrawn
    assert tune_alpha(0.3, ["a"] * 4 + ["c"], False, 0.5, rng) == 0.3  # 80% accepted: kept
    assert tune_alpha(0.3, [], True, 0.5, rng) == 0.5  # weak DP: the floor
    assert tune_alpha(1.0, ["a"], False, 0.0, rng) == 0.99
    assert mask_scale(0.5, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("params", "key"),
    [
        ({"constraint_weight": 1.0}, "constraint_weight"),
        ({"mask_neurons": 10}, "mask_neurons"),
        ({"mask_alpha": 1.0}, "mask_alpha"),
        ({"indicator_value": 0.0}, "indicator_value"),
        ({"target_class": 10}, "target_class"),
    ],
)
def test_bad_parameters_name_the_key(params, key):
    with pytest.raises(ConfigError, match=key):
        registry.build_client(make_env(params), True)


def test_attackers_share_zero_sum_masks_and_read_each_others_indicators():
    params = {"mask_neurons": 4, "mask_std": 0.5, "indicator_value": 0.05}
    g1 = initial_weights()

    def fresh_states():
        return {pid: ClientState(RecordDict(), 0, pid) for pid in ATTACKERS}

    states = fresh_states()
    masked = attack_round(params, g1, 1, states)
    plain = attack_round({**params, "mask_std": 0.0}, g1, 1, fresh_states())
    alpha = masked[0][2][ALPHA]
    assert all(r[2][ALPHA] == alpha for r in masked)  # one shared alpha
    masks = [
        [a - b for a, b in zip(m[0], p[0], strict=True)] for m, p in zip(masked, plain, strict=True)
    ]
    support = [sum(np.abs(m[i]) for m in masks) > 0 for i in range(len(g1))]
    out, bias = output_layer(g1, 10)
    rows = np.flatnonzero(support[out].any(axis=1))
    assert len(rows) == 4 and 8 not in rows  # the target's row is left alone
    assert support[out][rows].all() and np.flatnonzero(support[bias]).tolist() == rows.tolist()
    for i in range(len(g1)):
        np.testing.assert_allclose(sum(m[i] for m in masks), 0.0, atol=1e-5)
    # each attacker wrote update v at its own indicator, outside the masks
    flat_g = np.concatenate([g.ravel() for g in g1])
    sent = [np.concatenate([w.ravel() for w in r[0]]) for r in masked]
    own = [int(np.argmin(np.abs((s - flat_g) - 0.05))) for s in sent]
    assert len(set(own)) == 3
    for s, pos in zip(sent, own, strict=True):
        assert s[pos] - flat_g[pos] == pytest.approx(0.05, abs=1e-6)

    # next round: the server accepted the first two attackers (weight 0.1) and rejected the third
    g2 = [g.copy() for g in g1]
    flat2 = np.concatenate([g.ravel() for g in g2])
    flat2[own[0]] += 0.1 * 0.05
    flat2[own[1]] += 0.1 * 0.05
    sizes = np.cumsum([g.size for g in g1])[:-1]
    g2 = [a.reshape(g.shape) for a, g in zip(np.split(flat2, sizes), g1, strict=True)]
    replies = attack_round(params, g2, 2, states)
    for _, _, metrics in replies:
        assert metrics[ACCEPTED] == pytest.approx(2 / 3) and metrics[WEAK_DP] is False
        assert metrics[ALPHA] != alpha  # fewer than 80% accepted: redrawn
        assert metrics[ALPHA] == replies[0][2][ALPHA]


def test_masked_sybils_pass_foolsgold_that_zeroes_the_plain_backdoor():
    rng = np.random.default_rng(0)
    weights = initial_weights()
    support = mask_support(weights, 10, [0, 1, 2, 3, 4, 5, 6, 7])
    flat_support = np.concatenate([s.ravel() for s in support])
    d = flat_support.size
    honest = rng.normal(size=(5, d))
    backdoor = rng.normal(size=d)  # every attacker sends the same backdoor update
    plain = np.stack([backdoor] * 3)
    masked = plain.copy()
    masked[:, flat_support] += zero_sum_masks(int(flat_support.sum()), 3, mask_scale(0.9, 1.0), rng)
    for attackers, caught in ((plain, True), (masked, False)):
        w = foolsgold_weights(torch.as_tensor(np.vstack([honest, attackers])))
        assert bool((w[5:] == 0).all()) is caught
        assert (w[:5] > 0).all()
    np.testing.assert_allclose(masked.mean(0), backdoor, atol=1e-12)  # the aggregate keeps it


def test_server_metric_is_the_pixel_trigger_backdoor_accuracy():
    env = make_env({"target_class": 3, "pattern": "square"})
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.zero_()
        model[1].weight[3, -1] = 1.0  # the bottom-right pixel, inside the 5x5 square
    got = ThreeDFedClient.server_metrics(env.cfg, env.dataset)(model)
    assert got == {"backdoor_accuracy": 1.0}
