"""One rule, both Flower APIs: the Message-API adapter against the legacy one.

Every registered rule and transform (the registry is iterated, so a new
rule is checked as soon as it is registered) is built twice with the same
parameters; the legacy strategy gets ``FitRes`` and the Message-API strategy
gets ``Message`` replies carrying the same models, and the new global models
must be identical, round after round. A toy rule defined here appears in both
APIs through one registry entry. Hostile replies are rejected one by one in
the Message face as in the legacy one, and the standalone defaults (min
clients, ``registration_timeout``, failures up to the rule's ``f``, the
initial model from a client) behave alike in both faces.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Error,
    Message,
    Metadata,
    MetricRecord,
    RecordDict,
)
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_manager import SimpleClientManager
from flwr.server.strategy import FedAvg as FlowerFedAvg
from flwr.serverapp.strategy import FedAvg as FlowerMessageFedAvg
from flwr.supercore.task_identity import TaskIdentity

from flsec_flower.aggregation import Aggregate, RoundContext
from flsec_flower.app import registry
from flsec_flower.app.message_api import build_rule, message_strategy
from flsec_flower.config import ConfigError
from strategies import Bucketing, Krum, MessageStrategy, RobustStrategy
from strategies._too_few import TooFewClientsError
from strategies.base import RegistrationTimeoutError
from tests.test_fuzz_rules import NAMES, equip, promise_for

SHAPES = {"w": (3, 2), "b": (2,)}


@pytest.fixture(autouse=True)
def run_identity(monkeypatch):
    """A ServerApp process knows its run id; Messages built outside one need it set."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def metadata(node: int) -> Metadata:
    return Metadata(
        run_id=0,
        message_id="",
        src_node_id=node,
        dst_node_id=0,
        reply_to_message_id="",
        group_id="1",
        created_at=0.0,
        ttl=3600.0,
        message_type="train",
    )


def message(node: int, arrays: dict, num_examples: object = 10, **metrics) -> Message:
    content = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in arrays.items()}),
            "metrics": MetricRecord({"num-examples": num_examples, **metrics}),
        }
    )
    return Message(content, metadata=metadata(node))


def error_reply(node: int, reason: str) -> Message:
    return Message(Error(code=1, reason=reason), metadata=metadata(node))


def fit_res(node: int, arrays: dict, num_examples: int = 10):
    params = ndarrays_to_parameters(list(arrays.values()))
    return None, FitRes(Status(Code.OK, ""), params, num_examples, {"partition_id": node})


def models(rng, n, scale=1.0):
    return [
        {k: (rng.normal(size=s) * scale).astype(np.float32) for k, s in SHAPES.items()}
        for _ in range(n)
    ]


def zeros() -> dict:
    return {k: np.zeros(s, np.float32) for k, s in SHAPES.items()}


def legacy_face(rule: RobustStrategy, init: dict) -> RobustStrategy:
    rule.initial_parameters = ndarrays_to_parameters(list(init.values()))
    rule.initialize_parameters(None)
    return rule


def message_face(rule: RobustStrategy, init: dict) -> MessageStrategy:
    strategy = MessageStrategy(rule)
    strategy.configure_train(1, record(init), ConfigRecord(), Grid(2))
    return strategy


def record(arrays: dict) -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in arrays.items()})


class Grid:
    """The part of a Flower Grid a strategy uses: the connected node ids."""

    def __init__(self, n: int):
        self.nodes = list(range(100, 100 + n))

    def get_node_ids(self):
        return list(self.nodes)


def both_faces(make, n, rng, rounds=2, bad=()):
    """Run ``rounds`` rounds of the same replies through both faces; return both histories."""
    init = zeros()
    pids = list(range(n))
    legacy = legacy_face(make(), init)
    msg = message_face(make(), init)
    for face in (legacy, msg.rule):
        equip(face, promise_for(make.name), torch.full((8,), 0.05), pids, list(bad))
    out_legacy, out_msg = [], []
    for server_round in range(1, rounds + 1):
        updates = models(rng, n, scale=0.1)
        legacy_params, legacy_metrics = legacy.aggregate_fit(
            server_round, [fit_res(p, u) for p, u in zip(pids, updates, strict=True)], []
        )
        record, metrics = msg.aggregate_train(
            server_round, [message(p, u) for p, u in zip(pids, updates, strict=True)]
        )
        out_legacy.append((parameters_to_ndarrays(legacy_params), legacy_metrics))
        out_msg.append(([a.numpy() for a in record.values()], dict(metrics)))
    return out_legacy, out_msg


class Named:
    """A zero-argument factory that remembers which registry name it builds."""

    def __init__(self, name, n):
        self.name, self.n = name, n

    def __call__(self):
        return promise_for(self.name).make(self.n)


@pytest.mark.parametrize("name", NAMES)
def test_legacy_and_message_faces_give_identical_aggregates(name):
    n = 7
    legacy, msg = both_faces(Named(name, n), n, np.random.default_rng(sum(map(ord, name))))
    for (la, lm), (ma, mm) in zip(legacy, msg, strict=True):
        for got, want in zip(ma, la, strict=True):
            np.testing.assert_array_equal(got, want)
        assert {k: v for k, v in lm.items() if isinstance(v, (int, float))} == mm


def test_composition_is_the_same_in_both_faces():
    """Norm clipping, bucketing around Krum, RLR and DP noise, stacked, in both faces."""
    wrappers = [
        ("norm_clip", {"max_norm": 0.2}),
        ("bucketing", {"s": 2}),
        ("rlr", {"theta": 2}),
        ("dp_noise", {"sigma": 0.01}),
    ]

    class Chain(Named):
        def __call__(self):
            return build_rule("krum", {"f": 1}, wrappers, device="cpu", seed=3)

    legacy, msg = both_faces(Chain("krum", 10), 10, np.random.default_rng(5), rounds=3)
    for (la, _), (ma, _) in zip(legacy, msg, strict=True):
        for got, want in zip(ma, la, strict=True):
            np.testing.assert_array_equal(got, want)
    assert not np.allclose(legacy[-1][0][0], 0)


def test_every_registry_name_builds_in_both_faces():
    for name in registry.RULES:
        rule = promise_for(name).make(7)
        assert isinstance(MessageStrategy(rule).rule, registry.RULES[name])
    for name in registry.WRAPPERS:
        wrapped = promise_for(name).make(7)
        assert isinstance(MessageStrategy(wrapped).rule, registry.WRAPPERS[name])
    built = message_strategy("median", rule_kwargs={"device": "cpu"}, min_train_nodes=5)
    assert built.min_train_nodes == 5 and type(built.rule).__name__ == "CoordinateMedian"
    with pytest.raises(ConfigError, match=r"strategy\.name: unknown name 'nope'"):
        message_strategy("nope")


class ToyRule(RobustStrategy):
    """The coordinate-wise maximum: a rule no one would deploy, defined in one place."""

    def __init__(self, *, shift: float = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.shift = shift

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        return Aggregate(update=updates.max(dim=0).values + self.shift)


def test_a_toy_rule_registered_once_is_in_both_apis(monkeypatch):
    monkeypatch.setitem(registry.RULES, "toy_max", ToyRule)
    rng = np.random.default_rng(9)
    updates = models(rng, 4)
    legacy = legacy_face(build_rule("toy_max", {"shift": 1.0}, device="cpu"), zeros())
    params, _ = legacy.aggregate_fit(1, [fit_res(i, u) for i, u in enumerate(updates)], [])
    msg = message_strategy("toy_max", {"shift": 1.0}, rule_kwargs={"device": "cpu"})
    msg.configure_train(1, record(zeros()), ConfigRecord(), Grid(4))
    out, _ = msg.aggregate_train(1, [message(i, u) for i, u in enumerate(updates)])
    want = [np.max([u[k] for u in updates], axis=0) + 1.0 for k in SHAPES]
    for face in (parameters_to_ndarrays(params), [a.numpy() for a in out.values()]):
        for got, exp in zip(face, want, strict=True):
            np.testing.assert_allclose(got, exp, rtol=1e-6)
    assert "shift" in [p.name for p in registry.parameters(ToyRule)]


# ---------------------------------------------------------------- hostile replies
def hostile_cases(rng):
    good = models(rng, 1)[0]
    nan = {**good, "w": np.full((3, 2), np.nan, np.float32)}
    inf = {**good, "b": np.array([np.inf, 0], np.float32)}
    shape = {**good, "w": good["w"].T.copy()}
    dtype = {k: v.astype(np.float64) for k, v in good.items()}
    keys = {"x": good["w"], "b": good["b"]}
    two_records = RecordDict(
        {
            "arrays": ArrayRecord({k: Array(v) for k, v in good.items()}),
            "more": ArrayRecord({k: Array(v) for k, v in good.items()}),
            "metrics": MetricRecord({"num-examples": 10}),
        }
    )
    no_metrics = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in good.items()})})
    return {
        "nan": (message(50, nan), "non-finite"),
        "inf": (message(51, inf), "non-finite"),
        "wrong shape": (message(52, shape), "shape"),
        "wrong dtype": (message(53, dtype), "dtype float64"),
        "wrong keys": (message(54, keys), "ArrayRecord keys ['x', 'b']"),
        "two array records": (Message(two_records, metadata=metadata(55)), "one ArrayRecord"),
        "no metric record": (Message(no_metrics, metadata=metadata(56)), "one MetricRecord"),
        "num-examples negative": (message(57, good, -3), "num-examples=-3 is not a positive"),
        "num-examples nan": (message(58, good, float("nan")), "num-examples=nan"),
        "num-examples huge": (message(59, good, 10**12), "exceeds the bound"),
    }


@pytest.mark.parametrize("case", list(hostile_cases(np.random.default_rng(0))))
def test_a_hostile_message_is_rejected_by_name_and_the_rest_aggregated(case, caplog):
    rng = np.random.default_rng(1)
    honest = models(rng, 3)
    bad, reason = hostile_cases(rng)[case]
    strategy = message_face(registry.RULES["fedavg"](device="cpu", weighted=False), zeros())
    replies = [message(i, u) for i, u in enumerate(honest)] + [bad, error_reply(60, "boom")]
    with caplog.at_level(logging.WARNING, logger="flsec"):
        record, metrics = strategy.aggregate_train(1, replies)
    for key, got in record.items():
        np.testing.assert_allclose(got.numpy(), np.mean([u[key] for u in honest], axis=0), 1e-5)
    diag = strategy.rule.diagnostics[1]
    assert metrics["num_rejected"] == 1 and metrics["num_failures"] == 1
    node = bad.metadata.src_node_id
    assert diag.rejected[0].client == f"node {node}" and reason in diag.rejected[0].reason
    assert f"node {node}" in caplog.text and "node 60: boom" in diag.failures
    assert diag.partition_ids == [0, 1, 2]


def test_partition_ids_reported_by_clients_are_checked_like_legacy_ones():
    rng = np.random.default_rng(2)
    honest = models(rng, 3)
    strategy = MessageStrategy(
        registry.RULES["fedavg"](device="cpu", weighted=False), partition_id_key="partition-id"
    )
    strategy.configure_train(1, record(zeros()), ConfigRecord(), Grid(2))
    replies = [message(100 + i, u, **{"partition-id": i}) for i, u in enumerate(honest)]
    replies.append(message(200, honest[0], **{"partition-id": 1.5}))
    replies.append(message(201, honest[0], **{"partition-id": 2}))
    strategy.aggregate_train(1, replies)
    diag = strategy.rule.diagnostics[1]
    assert diag.partition_ids == [0, 1]
    reasons = {r.client: r.reason for r in diag.rejected}
    assert reasons["node 200 (reply 3)"] == "partition-id 1.5 is not an integer"
    assert "claimed by 2 replies" in reasons["partition 2"]


# ---------------------------------------------------------------- standalone defaults
def test_min_clients_default_to_flowers_in_both_faces():
    legacy, flower = Krum(f=1, device="cpu"), FlowerFedAvg()
    assert (legacy.min_fit_clients, legacy.min_available_clients) == (
        flower.min_fit_clients,
        flower.min_available_clients,
    )
    msg, flower_msg = MessageStrategy(Krum(f=1, device="cpu")), FlowerMessageFedAvg()
    assert (msg.min_train_nodes, msg.min_available_nodes) == (
        flower_msg.min_train_nodes,
        flower_msg.min_available_nodes,
    )
    given = Krum(f=1, device="cpu", min_fit_clients=7, min_available_clients=9)
    assert (given.min_fit_clients, given.min_available_clients) == (7, 9)
    assert MessageStrategy(Krum(f=1), min_available_nodes=9).min_available_nodes == 9


def test_registration_timeout_speaks_the_legacy_vocabulary():
    strategy = Krum(f=1, device="cpu", min_available_clients=3, registration_timeout=0.05)
    with pytest.raises(RegistrationTimeoutError) as err:
        strategy.configure_fit(1, ndarrays_to_parameters([np.zeros(2)]), SimpleClientManager())
    text = str(err.value)
    assert "registration_timeout=0.05 s" in text and "min_available_clients=3" in text
    assert "data.num_clients" not in text and "node" not in text


def test_registration_timeout_speaks_the_message_vocabulary():
    strategy = MessageStrategy(
        Krum(f=1, device="cpu"), min_available_nodes=4, registration_timeout=0.5
    )
    with pytest.raises(RegistrationTimeoutError) as err:
        strategy.configure_train(1, record(zeros()), ConfigRecord(), Grid(3))
    text = str(err.value)
    assert "only 3 of 4 nodes" in text and "min_available_nodes=4" in text
    assert "registration_timeout=0.5 s" in text and "clients" not in text


def test_registration_timeout_is_validated():
    with pytest.raises(ValueError, match="registration_timeout"):
        Krum(f=1, registration_timeout=0)
    with pytest.raises(ValueError, match="registration_timeout"):
        MessageStrategy(Krum(f=1), registration_timeout=-1)


@pytest.mark.parametrize("face", ["legacy", "message"])
def test_failures_are_tolerated_as_far_as_the_rules_f_allows(face):
    """Krum(f=1) needs n > 4: six nodes survive one failure, not two."""
    rng = np.random.default_rng(4)
    updates = models(rng, 6, scale=0.1)
    for lost in (1, 2):
        survivors = dict(enumerate(updates[lost:]))
        if lost == 1:
            new, metrics = krum_round(face, survivors, lost)
            assert new is not None and metrics["num_failures"] == 1 and metrics["f_used"] == 1
        else:
            with pytest.raises(TooFewClientsError, match=r"n=4, f=1.*2 client\(s\) failed"):
                krum_round(face, survivors, lost)


def krum_round(face: str, survivors: dict, lost: int):
    """One Krum(f=1) round of the surviving updates and ``lost`` failed clients."""
    if face == "legacy":
        strategy = legacy_face(Krum(f=1, device="cpu"), zeros())
        results = [fit_res(i, u) for i, u in survivors.items()]
        return strategy.aggregate_fit(1, results, [RuntimeError("gone")] * lost)
    msg = message_face(Krum(f=1, device="cpu"), zeros())
    replies = [message(i, u) for i, u in survivors.items()]
    replies += [error_reply(90 + i, "gone") for i in range(lost)]
    return msg.aggregate_train(1, replies)


def test_without_initial_parameters_the_legacy_face_adopts_the_clients_model():
    """Flower's Server fetches the initial weights from a client and passes them on."""
    rng = np.random.default_rng(6)
    start = models(rng, 1)[0]
    inner = Krum(f=1, device="cpu", min_available_clients=0)
    strategy = Bucketing(inner, s=1, device="cpu", min_available_clients=0)
    assert strategy.initialize_parameters(SimpleClientManager()) is None
    strategy.configure_fit(1, ndarrays_to_parameters(list(start.values())), SimpleClientManager())
    updates = models(rng, 5, scale=0.1)
    params, _ = strategy.aggregate_fit(1, [fit_res(i, u) for i, u in enumerate(updates)], [])
    assert params is not None
    assert strategy.layout is not None and strategy.layout.dim == 8


def test_without_a_model_the_error_names_the_face_s_argument():
    rng = np.random.default_rng(7)
    updates = models(rng, 5)
    with pytest.raises(RuntimeError, match="pass initial_parameters"):
        results = [fit_res(i, u) for i, u in enumerate(updates)]
        Krum(f=1, device="cpu").aggregate_fit(1, results, [])
    with pytest.raises(RuntimeError, match=r"pass initial_arrays to start\(\)"):
        MessageStrategy(Krum(f=1, device="cpu")).aggregate_train(
            1, [message(i, u) for i, u in enumerate(updates)]
        )
