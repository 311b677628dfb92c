"""3DFed: masks, indicators, decoys; masks pass FoolsGold, a decoy fools clustering; the mod."""

import numpy as np
import pytest
import torch
from flwr.app import RecordDict

from clients.mods import THREE_DFED_STATE, three_dfed_mod
from clients.three_dfed import (
    ACCEPTED,
    ALPHA,
    DECOY,
    DECOYS,
    WEAK_DP,
    Colluder,
    ThreeDFed,
    ThreeDFedClient,
    craft_update,
)
from clients.three_dfed_parts import (
    decoy_positions,
    indicator_positions,
    mask_scale,
    mask_support,
    output_layer,
    read_indicators,
    tune_alpha,
    tune_decoys,
    zero_sum_masks,
)
from flsec_flower.aggregation import RoundContext
from flsec_flower.app import registry
from flsec_flower.client_state import ClientState
from flsec_flower.config import ConfigError
from flsec_flower.models import build_model, get_weights
from strategies import CosineClustering
from strategies.foolsgold import foolsgold_weights
from tests.attack_env import toy_data, toy_env
from tests.test_attack_mods import (
    context,
    fake_handler,
    reply_arrays,
    task_identity,  # noqa: F401  (fixture)
    train_message,
)

ATTACKERS = [1, 3, 4]


def make_env(params=None, partition_id=1, n=16):
    data = toy_data(n, seed=partition_id)
    return toy_env(
        "three_dfed", ATTACKERS, params, num_clients=6, partition_id=partition_id, data=data
    )


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
        ({"decoys": 3}, "decoys"),
        ({"decoys": 2, "max_decoys": 1}, "decoys"),
        ({"max_decoys": -1}, "max_decoys"),
        ({"decoy_shift": 0.0}, "decoy_shift"),
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


def flat(weights):
    return np.concatenate([np.ravel(w) for w in weights])


def test_decoy_construction_by_hand():
    # 3 classes, target 2, both other rows masked (zero masks): the indicators and the decoy's
    # coordinate are in row 2 of the output weight (flat 8..11); no earlier global model, so the
    # indicators are the first two free coordinates, 8 (rank 0) and 9 (rank 1)
    p = ThreeDFed(target_class=2, mask_neurons=2, mask_std=0.0, indicator_value=0.5, decoys=1)
    g = [np.zeros((3, 4), np.float32), np.zeros(3, np.float32)]
    benign = [np.array([[0.2] * 4, [0.2] * 4, [0, 0, 0.1, 0.1]], np.float32), np.full(3, 0.1)]
    trained = [benign[0].copy(), np.array([0.1, 0.1, 0.3], np.float32)]
    trained[0][2, 2] = 0.3  # |bd - ben| over 10, 11: 0.2, 0.0, so the decoy moves 11
    assert decoy_positions(flat(trained), flat(benign), np.arange(15) < 10, 1).tolist() == [11]
    # ||bd|| > ||ben||: scale 1
    sent = [craft_update(p, Colluder(r, 2, 0, 3), g, trained, benign, None, 1) for r in (0, 1)]
    expected = flat(benign)
    expected[11] += 10.0  # decoy_shift
    expected[9] = 0.5  # its indicator
    np.testing.assert_allclose(flat(sent[1].weights), expected, atol=1e-6)
    backdoor = flat(trained)
    backdoor[8] = 0.5
    np.testing.assert_allclose(flat(sent[0].weights), backdoor, atol=1e-6)
    assert [s.metrics[DECOY] for s in sent] == [False, True]
    assert sent[0].metrics[DECOYS] == 1


def test_decoy_count_follows_the_indicators():
    assert tune_decoys(0, ["r", "r"], [], False, 2) == 1  # backdoors caught: one decoy more
    assert tune_decoys(2, ["c"], ["a", "r"], False, 2) == 1  # an accepted decoy is wasted
    assert tune_decoys(2, ["r"], ["r", "r"], False, 2) == 2  # at the cap
    assert tune_decoys(1, ["r"], ["r"], True, 2) == 0  # weak DP: none
    with pytest.raises(ValueError, match="decoys"):
        decoy_positions(np.zeros(3), np.zeros(3), np.array([True, True, False]), 2)
    # through the attack's memory: an unchanged global model rejected all three backdoors
    p = ThreeDFed(target_class=2, mask_neurons=1, indicator_value=0.5)
    g = [np.zeros((3, 4), np.float32), np.zeros(3, np.float32)]
    trained = [np.full((3, 4), 0.1, np.float32), np.full(3, 0.1, np.float32)]
    first = [craft_update(p, Colluder(r, 3, 0, 3), g, trained, trained, None, 1) for r in range(3)]
    assert all(c.metrics[DECOYS] == 0 and not c.metrics[DECOY] for c in first)
    second = [
        craft_update(p, Colluder(r, 3, 0, 3), g, trained, trained, first[r].memory, 2)
        for r in range(3)
    ]
    assert [c.metrics[DECOY] for c in second] == [False, False, True]
    assert second[0].metrics[DECOYS] == 1 and second[0].metrics[ACCEPTED] == 0.0


def test_a_decoy_draws_cosine_clustering_off_the_masked_backdoors():
    """3DFed's decoy property: the detector spends its outlier label on the decoy.

    Five honest updates around a common direction, three attackers whose
    backdoored updates add a shared backdoor direction (all small, norm ~0.2).
    Without decoys the backdoors form the smaller cosine cluster and are
    flagged; with one decoy (the benign update with one coordinate moved by 10)
    the two clusters are the decoy and everyone else, so both masked backdoors
    are aggregated.
    """
    rng = np.random.default_rng(0)
    like = [np.zeros((10, 20), np.float32), np.zeros(10, np.float32)]
    d = 210
    common, direction = rng.normal(size=d), rng.normal(size=d)

    def model(vector):
        return [vector[:200].reshape(10, 20).astype(np.float32), vector[200:].astype(np.float32)]

    honest = [0.01 * (common + 0.3 * rng.normal(size=d)) for _ in range(5)]
    benign = [0.01 * (common + 0.3 * rng.normal(size=d)) for _ in range(3)]
    trained = [b + 0.01 * direction for b in benign]
    n = 8
    ctx = RoundContext(
        server_round=1,
        partition_ids=list(range(n)),
        num_examples=torch.ones(n),
        global_params=torch.zeros(d),
        generator=torch.Generator().manual_seed(0),
    )
    for decoys, flagged in ((0, [5, 6, 7]), (1, [7])):
        p = ThreeDFed(mask_std=1e-4, indicator_value=1e-3, decoys=decoys)
        sent = [
            flat(
                craft_update(
                    p, Colluder(r, 3, 0, 10), like, model(trained[r]), model(benign[r]), None, 1
                ).weights
            )
            for r in range(3)
        ]
        updates = torch.tensor(np.stack(honest + sent), dtype=torch.float32)
        agg = CosineClustering(device="cpu").aggregate_updates(updates, ctx)
        assert agg.flagged == flagged


def test_mod_sends_bit_for_bit_what_the_client_crafts():
    """Two rounds, three attackers (one decoy at first): the mod sends the client's ``craft``.

    The second global model is the mean of the first round's replies, so every
    indicator reads 1/3 of its value: all accepted, and the accepted decoy is dropped.
    """
    params = {"mask_neurons": 4, "mask_std": 0.5, "decoys": 1}
    rng = np.random.default_rng(0)
    clients = [registry.build_client(make_env(params, pid), True) for pid in ATTACKERS]
    contexts = [context() for _ in ATTACKERS]
    g = initial_weights()
    for server_round, decoys in ((1, 1), (2, 0)):
        sent = []
        for rank, (client, ctxt) in enumerate(zip(clients, contexts, strict=True)):
            trained = [a + rng.normal(scale=1e-3, size=a.shape).astype(a.dtype) for a in g]
            client.benign = trained  # the mod's benign model is the handler's reply
            expected = client.craft(g, trained, server_round)
            mod = three_dfed_mod(rank, len(ATTACKERS), client.env.cfg.seed, **params)
            reply = mod(
                train_message({"server-round": server_round}, arrays={"w": g[0], "b": g[1]}),
                ctxt,
                fake_handler({"w": trained[0], "b": trained[1]}),
            )
            out = reply_arrays(reply)
            for got, want in zip((out["w"], out["b"]), expected, strict=True):
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes()
            assert client.round_metrics[DECOYS] == decoys
            assert client.round_metrics[DECOY] == (rank >= 3 - decoys)
            assert THREE_DFED_STATE in ctxt.state.array_records
            sent.append(expected)
        g = [np.mean(layer, axis=0).astype(np.float32) for layer in zip(*sent, strict=True)]
    assert clients[0].round_metrics[ACCEPTED] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"rank": 3}, "rank"),
        ({"decoys": 3}, "decoys"),
        ({"mask_neurons": 10}, "mask_neurons"),
        ({"target_class": 10}, "target_class"),
        ({"colour": 1}, "colour"),
    ],
)
def test_mod_rejects_bad_parameters_by_name(kwargs, key):
    args = {"rank": 0, "attackers": 3, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=key):
        three_dfed_mod(**args)


def test_mod_answers_an_error_for_a_model_without_output_layer():
    reply = three_dfed_mod(0, 3, 0)(train_message({"server-round": 1}), context(), fake_handler())
    assert reply.has_error() and "three_dfed_mod" in reply.error.reason
    assert "output layer" in reply.error.reason
