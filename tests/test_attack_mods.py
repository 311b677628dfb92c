"""Client mods, the attack objects they share with the NumPyClients, and standalone attacks."""

import dataclasses

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.supercore.task_identity import TaskIdentity

from clients.attack import ACTIVE_TAG
from clients.gaussian import Gaussian
from clients.label_flip import LabelFlip
from clients.model_poisoning import ModelPoisoningClient, forge_update
from clients.model_replacement import Scaling
from clients.mods import (
    MODEL_POISONING,
    attack_mod,
    message_round,
    scaling_mod,
    sign_flip_mod,
    tag_mod,
)
from clients.pixel_trojan import PixelTrigger
from clients.poisoned_data import PoisonedDataset
from clients.schedule import RoundClock, Schedule, round_from_config
from clients.sign_flip import SignFlip
from clients.standalone import StandaloneAttackClient
from flsec_flower.app import registry
from flsec_flower.experiment import client_seed
from flsec_flower.models import get_weights
from tests.test_model_poisoning import fit, make_env

GLOBAL = {"w": np.array([1.0, 2.0, -1.0], np.float32), "b": np.array([0.5], np.float32)}
TRAINED = {"w": np.array([1.5, 1.0, -1.0], np.float32), "b": np.array([0.25], np.float32)}


@pytest.fixture(autouse=True)
def task_identity(monkeypatch):
    """Messages are built inside a Flower task; give this process one."""
    for attr, value in (("_run_id", 1), ("_node_id", 3), ("_task_id", 1)):
        monkeypatch.setattr(TaskIdentity, attr, value)


def train_message(config=None, group_id="", arrays=None):
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in (arrays or GLOBAL).items()}),
            "config": ConfigRecord(config or {}),
        }
    )
    return Message(content, dst_node_id=3, message_type=MessageType.TRAIN, group_id=group_id)


def context():
    return Context(run_id=1, node_id=3, node_config={}, state=RecordDict(), run_config={})


def fake_handler(trained=None):
    """A train handler that 'trains' to ``trained`` and counts its calls."""
    calls = []

    def handler(msg, ctxt):
        calls.append(msg)
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in (trained or TRAINED).items()}),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        )
        return Message(content, reply_to=msg)

    handler.calls = calls
    return handler


def reply_arrays(reply):
    record = next(iter(reply.content.array_records.values()))
    return dict(zip(record.keys(), record.to_numpy_ndarrays(), strict=True))


def test_sign_flip_mod_sends_exactly_minus_the_update():
    reply = sign_flip_mod(train_message({"server-round": 1}), context(), fake_handler())
    out = reply_arrays(reply)
    # G - (X - G): w = [1 - 0.5, 2 + 1, -1 - 0], b = 0.5 + 0.25
    np.testing.assert_array_equal(out["w"], np.array([0.5, 3.0, -1.0], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([0.75], np.float32))
    assert out["w"].dtype == np.float32


def test_scaling_and_same_value_mods_by_hand():
    out = reply_arrays(scaling_mod(gamma=4.0)(train_message(), context(), fake_handler()))
    # G + 4 (X - G): w = [1 + 2, 2 - 4, -1], b = 0.5 - 1
    np.testing.assert_array_equal(out["w"], np.array([3.0, -2.0, -1.0], np.float32))
    np.testing.assert_array_equal(out["b"], np.array([-0.5], np.float32))
    out = reply_arrays(
        attack_mod("same_value", sigma=2.0)(train_message(), context(), fake_handler())
    )
    np.testing.assert_array_equal(out["w"], GLOBAL["w"] + 2.0)


def test_scaling_norm_bound_caps_the_update():
    # ||X - G|| = ||(0.5, -1, 0, -0.25)|| = 1.1456...; S = 0.5 gives ||forged|| = 0.5
    mod = scaling_mod(gamma=100.0, norm_bound=0.5)
    out = reply_arrays(mod(train_message(), context(), fake_handler()))
    forged = np.concatenate([out["w"] - GLOBAL["w"], out["b"] - GLOBAL["b"]])
    assert np.linalg.norm(forged) == pytest.approx(0.5, rel=1e-5)


def test_gaussian_mod_is_seeded_and_ignores_training():
    mod = attack_mod("gaussian", sigma=3.0, seed=5)
    a = reply_arrays(mod(train_message({"server-round": 2}), context(), fake_handler()))
    b = reply_arrays(mod(train_message({"server-round": 2}), context(), fake_handler()))
    c = reply_arrays(mod(train_message({"server-round": 3}), context(), fake_handler()))
    np.testing.assert_array_equal(a["w"], b["w"])
    assert not np.array_equal(a["w"], c["w"])
    rng = np.random.default_rng([5, 3, 2])
    expected = Gaussian(3.0).forge([GLOBAL["w"], GLOBAL["b"]], [TRAINED["w"], TRAINED["b"]], rng)
    np.testing.assert_array_equal(a["w"], expected[0])


def test_mod_passes_other_messages_and_inactive_rounds_through():
    mod = attack_mod("sign_flip", schedule=Schedule(start_round=3))
    out = reply_arrays(mod(train_message({"server-round": 2}), context(), fake_handler()))
    np.testing.assert_array_equal(out["w"], TRAINED["w"])
    out = reply_arrays(mod(train_message({"server-round": 3}), context(), fake_handler()))
    np.testing.assert_array_equal(out["w"], np.array([0.5, 3.0, -1.0], np.float32))


def test_evaluate_reply_is_untouched():
    handler = fake_handler()
    msg = Message(
        RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in GLOBAL.items()})}),
        dst_node_id=3,
        message_type=MessageType.EVALUATE,
    )
    out = reply_arrays(sign_flip_mod(msg, context(), handler))
    np.testing.assert_array_equal(out["w"], TRAINED["w"])


def test_round_from_config_group_id_or_count_in_context_state():
    ctxt = context()
    assert message_round(train_message({"server-round": 4}), ctxt) == 4
    assert message_round(train_message({"server_round": 6}), ctxt) == 6
    assert message_round(train_message(group_id="9"), ctxt) == 9
    assert message_round(train_message(), ctxt) == 10
    fresh = context()
    assert [message_round(train_message(), fresh) for _ in range(3)] == [1, 2, 3]


def test_mod_counts_rounds_for_a_schedule_without_round_keys():
    mod = attack_mod("sign_flip", schedule=Schedule(start_round=2, end_round=2))
    ctxt = context()
    outs = [reply_arrays(mod(train_message(), ctxt, fake_handler()))["w"] for _ in range(3)]
    np.testing.assert_array_equal(outs[0], TRAINED["w"])
    np.testing.assert_array_equal(outs[1], np.array([0.5, 3.0, -1.0], np.float32))
    np.testing.assert_array_equal(outs[2], TRAINED["w"])


def test_mod_errors_instead_of_silently_honest_replies():
    unchanged = sign_flip_mod(train_message(), context(), fake_handler(GLOBAL))
    assert unchanged.has_error() and "unchanged" in unchanged.error.reason
    renamed = {"v": TRAINED["w"], "b": TRAINED["b"]}
    bad = sign_flip_mod(train_message(), context(), fake_handler(renamed))
    assert bad.has_error() and "named" in bad.error.reason
    reshaped = {"w": np.zeros(2, np.float32), "b": TRAINED["b"]}
    bad = sign_flip_mod(train_message(), context(), fake_handler(reshaped))
    assert bad.has_error() and "'w'" in bad.error.reason
    empty = Message(
        RecordDict({"config": ConfigRecord({})}), dst_node_id=3, message_type=MessageType.TRAIN
    )
    handler = fake_handler()
    bad = sign_flip_mod(empty, context(), handler)
    assert bad.has_error() and "ArrayRecord" in bad.error.reason and not handler.calls


@pytest.mark.parametrize(
    ("name", "params", "needle"),
    [
        ("alie", {}, "not a model-poisoning attack"),
        ("label_flip", {}, "dataset wrappers"),
        ("sign_flip", {"scale": -1.0}, "scale"),
        ("gaussian", {"sigma": float("nan")}, "sigma"),
        ("sign_flip", {"gamma": 2.0}, "gamma"),
        ("scaling", {}, "gamma"),
    ],
)
def test_bad_mod_arguments_raise_at_construction(name, params, needle):
    with pytest.raises(ValueError, match=needle):
        attack_mod(name, **params)


def test_every_registry_model_poisoning_name_has_a_mod():
    for name, cls in registry.ATTACKS.items():
        if issubclass(cls, ModelPoisoningClient):
            assert MODEL_POISONING[name] is cls.params_type
            attack_mod(name)


@pytest.mark.parametrize(
    ("name", "params"),
    [("sign_flip", {"scale": 2.0}), ("same_value", {"sigma": 3.0}), ("gaussian", {"sigma": 1.0})],
)
def test_numpy_client_and_mod_forge_the_same_update(name, params):
    env = make_env(name, params)
    client = registry.build_client(env, malicious=True)
    init = get_weights(client.model)
    weights, _ = fit(client, init, server_round=1)
    honest = registry.build_client(make_env(name, params), malicious=False)
    trained = fit(honest, init, server_round=1)[0]
    keys = [str(i) for i in range(len(init))]
    mod = attack_mod(name, **params)
    if name == "gaussian":
        # same randomness: the attack object with the NumPyClient's generator
        rng = np.random.default_rng(client_seed(env.cfg, 0, 1))
        expected = MODEL_POISONING[name](**params).forge(init, trained, rng)
        for w, e in zip(weights, expected, strict=True):
            np.testing.assert_array_equal(w, e)
        return
    reply = mod(
        train_message({"server_round": 1}, arrays=dict(zip(keys, init, strict=True))),
        context(),
        fake_handler(dict(zip(keys, trained, strict=True))),
    )
    out = reply_arrays(reply)
    for key, w in zip(keys, weights, strict=True):
        np.testing.assert_array_equal(out[key], w)


def test_forge_update_is_minus_the_update_for_sign_flip():
    out = forge_update(SignFlip(), [np.array([0.5, -1.0]), np.array([2.0])])
    assert [a.tolist() for a in out] == [[-0.5, 1.0], [-2.0]]
    assert forge_update(Scaling(gamma=3.0), [np.array([1.0])])[0].tolist() == [3.0]


def test_tag_mod_marks_active_rounds_only():
    mod = tag_mod(Schedule(start_round=2))
    first = mod(train_message({"server-round": 1}), context(), fake_handler())
    second = mod(train_message({"server-round": 2}), context(), fake_handler())
    assert ACTIVE_TAG not in next(iter(first.content.metric_records.values()))
    assert next(iter(second.content.metric_records.values()))[ACTIVE_TAG] == 1
    np.testing.assert_array_equal(reply_arrays(second)["w"], TRAINED["w"])


def test_schedule_and_round_clock():
    assert [Schedule(2, single_shot=True).active(r) for r in (1, 2, 3)] == [False, True, False]
    with pytest.raises(ValueError, match="end_round"):
        Schedule(3, 2)
    with pytest.raises(ValueError, match="start_round"):
        Schedule(0)
    with pytest.raises(ValueError, match="server-round"):
        round_from_config({"server-round": "x"})
    clock = RoundClock(require_config=True)
    assert clock.tick({"server_round": 2}) == 2
    with pytest.raises(RuntimeError, match="names no round"):
        clock.tick({})


def test_poisoned_dataset_label_flip_and_pixel_trigger():
    base = [(torch.zeros(1, 8, 8), label) for label in (0, 1, 2, 3)]
    flipped = PoisonedDataset(base, LabelFlip(4))
    assert [int(y) for _, y in flipped] == [3, 2, 1, 0]
    stamped = PoisonedDataset(base, PixelTrigger(1, "square", poison_fraction=0.5), seed=1)
    labels = [int(y) for _, y in stamped]
    stamped_items = [int(x.sum()) for x, _ in stamped]
    assert sorted(stamped_items) == [0, 0, 25, 25]
    assert all(y == 1 for y, s in zip(labels, stamped_items, strict=True) if s)
    with pytest.raises(ValueError, match="mapping"):
        LabelFlip(3, {0: 5})
    with pytest.raises(ValueError, match="base"):
        PoisonedDataset([], LabelFlip(3))


def small_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))


def small_data():
    g = torch.Generator().manual_seed(0)
    return torch.rand(12, 1, 2, 2, generator=g), torch.arange(12) % 3


def test_standalone_sign_flip_is_minus_the_honest_update_and_counts_rounds():
    x, y = small_data()
    attacker = StandaloneAttackClient(
        small_model(), x, y, update_attack=SignFlip(), schedule=Schedule(start_round=2), lr=0.1
    )
    honest_twin = StandaloneAttackClient(
        small_model(), x, y, update_attack=SignFlip(), schedule=Schedule(start_round=99), lr=0.1
    )
    init = get_weights(small_model())
    _, _, m1 = attacker.fit(init, {})
    assert m1[ACTIVE_TAG] is False
    honest_twin.fit(init, {})
    second, n, m2 = attacker.fit(init, {})  # second fit call: round 2, active
    trained, _, _ = honest_twin.fit(init, {})
    assert m2[ACTIVE_TAG] is True and n == 12
    for g, w, t in zip(init, second, trained, strict=True):
        np.testing.assert_allclose(w - g, -(t - g), atol=1e-6)
    attacker.fit(init, {"server-round": 7})
    assert attacker.clock.last == 7


def test_standalone_label_flip_trains_on_flipped_labels():
    x, y = small_data()
    flip = StandaloneAttackClient(small_model(), x, y, data_attack=LabelFlip(3), lr=0.1)
    twin = StandaloneAttackClient(small_model(), x, 2 - y, data_attack=LabelFlip(3, {}), lr=0.1)
    init = get_weights(small_model())
    a = flip.fit(init, {"server_round": 1})[0]
    b = twin.fit(init, {"server_round": 1})[0]
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v, atol=1e-6)


def test_standalone_errors():
    x, y = small_data()
    with pytest.raises(ValueError, match="at least one"):
        StandaloneAttackClient(small_model(), x, y)
    with pytest.raises(TypeError, match="omniscient"):
        StandaloneAttackClient(small_model(), x, y, update_attack=object())
    with pytest.raises(ValueError, match="x, y"):
        StandaloneAttackClient(small_model(), x, y[:3], update_attack=SignFlip())
    strict = StandaloneAttackClient(
        small_model(), x, y, update_attack=SignFlip(), require_round=True
    )
    with pytest.raises(RuntimeError, match="names no round"):
        strict.fit(get_weights(small_model()), {})
    frozen = StandaloneAttackClient(small_model(), x, y, update_attack=SignFlip(), lr=1e-30)
    with pytest.raises(RuntimeError, match="zero update"):
        frozen.fit(get_weights(small_model()), {})
    client = StandaloneAttackClient(small_model(), x, y, update_attack=SignFlip())
    with pytest.raises(ValueError, match="parameters"):
        client.fit([np.zeros(2, np.float32)], {})


def test_attack_client_without_attack_block_refuses():
    env = make_env("sign_flip")
    no_attack = dataclasses.replace(env, cfg=dataclasses.replace(env.cfg, attack=None))
    with pytest.raises(ValueError, match="attack block"):
        registry.ATTACKS["sign_flip"](no_attack)


def test_attack_client_knows_the_round_without_server_round():
    env = make_env("sign_flip", attack={"start_round": 2})
    client = registry.build_client(env, malicious=True)
    init = get_weights(client.model)
    _, metrics = client.fit(init, {})[1:]
    assert metrics[ACTIVE_TAG] is False
    _, metrics = client.fit(init, {})[1:]
    assert metrics[ACTIVE_TAG] is True
    _, metrics = client.fit(init, {"server-round": 1})[1:]
    assert metrics[ACTIVE_TAG] is False
