"""The colluding adversary of the omniscient attacks: plumbing, modes, strategy path."""

import dataclasses

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from torch import nn

from clients import (
    AgrTailoredClient,
    AlieClient,
    FangClient,
    IpmClient,
    Mimic2Client,
    MimicClient,
    MinMaxClient,
    MinSumClient,
    NormalizedMeanClient,
)
from clients.attack import ACTIVE_TAG
from clients.ipm import Ipm
from clients.omniscient import (
    ColludingAdversary,
    OmniscientAttackClient,
    attacker_rows,
    colluding_adversary,
)
from flsec_flower.aggregation import RoundContext
from flsec_flower.app import registry
from flsec_flower.config import AttackConfig, ConfigError, ExperimentConfig
from flsec_flower.experiment import ClientEnv

OMNISCIENT = [
    AgrTailoredClient,
    AlieClient,
    FangClient,
    IpmClient,
    Mimic2Client,
    MimicClient,
    MinMaxClient,
    MinSumClient,
    NormalizedMeanClient,
]
NAMES = {
    "agr_tailored": AgrTailoredClient,
    "alie": AlieClient,
    "fang": FangClient,
    "ipm": IpmClient,
    "mimic": MimicClient,
    "mimic2": Mimic2Client,
    "min_max": MinMaxClient,
    "min_sum": MinSumClient,
    "normalized_mean": NormalizedMeanClient,
}


def context(pids, metrics, seed=0):
    n = len(pids)
    return RoundContext(
        server_round=1,
        partition_ids=list(pids),
        num_examples=torch.ones(n),
        global_params=torch.zeros(1),
        generator=torch.Generator().manual_seed(seed),
        client_metrics=metrics,
    )


def tagged(active=True):
    return {"malicious": True, ACTIVE_TAG: active}


def cfg_with(name, **params):
    return ExperimentConfig(attack=AttackConfig(name=name, num_malicious=2, params=params))


def round_matrix(seed=0, n=7, d=6):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen)


# rows 0..6, partitions 10..16; 12 and 15 attack (active), 16 attacks but inactive this
# round, and 13 claims to be active but is not an attacker.
PIDS = [10, 11, 12, 13, 14, 15, 16]
MALICIOUS = {12, 15, 16}
METRICS = [{}, {}, tagged(), {ACTIVE_TAG: True}, {}, tagged(), tagged(False)]
ACTIVE, HONEST = [2, 5], [0, 1, 3, 4]


def test_attacker_rows_uses_ground_truth_and_tag():
    assert attacker_rows(context(PIDS, METRICS), MALICIOUS) == (ACTIVE, HONEST)


@pytest.mark.parametrize("cls", OMNISCIENT)
@pytest.mark.parametrize("omniscient", [True, False])
def test_only_active_attacker_rows_are_rewritten(cls, omniscient):
    u = round_matrix()
    adversary = cls.build_adversary(omniscient=omniscient, malicious_partition_ids=MALICIOUS)
    out = adversary(u, context(PIDS, METRICS))
    keep = [i for i in range(len(PIDS)) if i not in ACTIVE]
    assert torch.equal(out[keep], u[keep])
    assert out.dtype == u.dtype and out.shape == u.shape
    assert torch.isfinite(out).all()
    changed = [i for i in ACTIVE if not torch.equal(out[i], u[i])]
    assert changed == ACTIVE or cls in (MimicClient, Mimic2Client)


def test_omniscient_reference_is_the_honest_rows_and_forged_rows_are_written():
    u = round_matrix()
    out = IpmClient.build_adversary(epsilon=0.5, malicious_partition_ids=MALICIOUS)(
        u, context(PIDS, METRICS)
    )
    expected = -0.5 * u[HONEST].mean(dim=0)
    for i in ACTIVE:
        assert torch.equal(out[i], expected)


@pytest.mark.parametrize("cls", OMNISCIENT)
def test_non_omniscient_mode_uses_only_the_attackers_rows(cls):
    u = round_matrix(1)
    other = u.clone()
    other[HONEST] = round_matrix(2)[HONEST] * 5.0
    out_a = cls.build_adversary(omniscient=False, malicious_partition_ids=MALICIOUS)(
        u, context(PIDS, METRICS)
    )
    out_b = cls.build_adversary(omniscient=False, malicious_partition_ids=MALICIOUS)(
        other, context(PIDS, METRICS)
    )
    assert torch.equal(out_a[ACTIVE], out_b[ACTIVE])


@pytest.mark.parametrize("cls", [AlieClient, IpmClient, MinMaxClient, NormalizedMeanClient])
def test_omniscient_mode_depends_on_the_honest_rows(cls):
    u = round_matrix(1)
    other = u.clone()
    other[HONEST] = round_matrix(2)[HONEST] * 5.0
    out_a = cls.build_adversary(malicious_partition_ids=MALICIOUS)(u, context(PIDS, METRICS))
    out_b = cls.build_adversary(malicious_partition_ids=MALICIOUS)(other, context(PIDS, METRICS))
    assert not torch.equal(out_a[ACTIVE], out_b[ACTIVE])


def test_non_omniscient_ipm_is_the_attackers_own_mean():
    u = round_matrix(3)
    out = IpmClient.build_adversary(omniscient=False, malicious_partition_ids=MALICIOUS)(
        u, context(PIDS, METRICS)
    )
    assert torch.equal(out[2], -0.1 * u[ACTIVE].mean(dim=0))


def test_no_active_attacker_returns_the_matrix_unchanged():
    u = round_matrix()
    metrics = [{}, {}, tagged(False), {}, {}, tagged(False), tagged(False)]
    out = IpmClient.build_adversary(malicious_partition_ids=MALICIOUS)(u, context(PIDS, metrics))
    assert torch.equal(out, u)


def test_round_without_honest_rows_falls_back_to_the_attackers_rows():
    u = round_matrix(n=2)
    out = IpmClient.build_adversary(malicious_partition_ids={3, 4})(
        u, context([3, 4], [tagged(), tagged()])
    )
    assert torch.equal(out[0], -0.1 * u.mean(dim=0))


def test_forged_non_finite_values_become_finite():
    def forger(reference, ids, f, n, gen):
        return torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0])

    u = torch.zeros(3, 4)
    out = ColludingAdversary(forger, malicious_partition_ids={1})(
        u, context([0, 1, 2], [{}, tagged(), {}])
    )
    assert torch.isfinite(out).all()
    assert out[1].tolist() == [0.0, torch.finfo(torch.float32).max, -torch.finfo().max, 1.0]


def test_per_attacker_rows_are_written_in_order():
    def forger(reference, ids, f, n, gen):
        return torch.arange(float(f))[:, None].expand(f, 2)

    out = ColludingAdversary(forger, malicious_partition_ids={0, 2})(
        torch.zeros(3, 2), context([0, 1, 2], [tagged()] * 3)
    )
    assert out.tolist() == [[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]


def test_huge_updates_never_give_non_finite_rows():
    u = round_matrix() * 1e30
    for cls in OMNISCIENT:
        out = cls.build_adversary(malicious_partition_ids=MALICIOUS)(u, context(PIDS, METRICS))
        assert torch.isfinite(out).all(), cls.__name__


# ------------------------------------------------------------------ config


def test_server_adversary_reads_the_config_params():
    cfg = cfg_with("ipm", epsilon=100.0, omniscient=False)
    cfg.attack.malicious_ids = sorted(MALICIOUS)
    adversary = IpmClient.server_adversary(cfg)
    assert isinstance(adversary, ColludingAdversary) and not adversary.omniscient
    u = round_matrix()
    out = adversary(u, context(PIDS, METRICS))
    assert torch.allclose(out[2], -100.0 * u[ACTIVE].mean(dim=0))


def test_server_adversary_without_attack_is_none():
    assert IpmClient.server_adversary(ExperimentConfig()) is None


@pytest.mark.parametrize(
    ("cls", "params"),
    [
        (IpmClient, {"epsilon": -1.0}),
        (IpmClient, {"epsilon": float("nan")}),
        (AlieClient, {"z": float("inf")}),
        (MinMaxClient, {"perturbation": "cosine"}),
        (MinMaxClient, {"tau": 0.0}),
        (MinSumClient, {"gamma_init": -10.0}),
        (MimicClient, {"warmup": 0}),
        (Mimic2Client, {"target": -1}),
        (NormalizedMeanClient, {"omniscient": "yes"}),
        (FangClient, {"agr": "bulyan"}),
        (FangClient, {"b": 1.0}),
        (AgrTailoredClient, {"agr": "bulyan"}),
        (AgrTailoredClient, {"f": -1}),
    ],
)
def test_bad_parameters_raise_value_error_naming_them(cls, params):
    name = next(iter(params))
    with pytest.raises(ValueError, match=name):
        cls.build_adversary(**params)


def test_unknown_parameter_raises_type_error():
    with pytest.raises(TypeError):
        IpmClient.build_adversary(eps=0.1)


def test_registry_names_and_client_parameters():
    for name, cls in NAMES.items():
        assert registry.ATTACKS[name] is cls
        assert issubclass(cls, OmniscientAttackClient)
        assert "omniscient" in registry._user_parameters(cls)
    assert set(registry._user_parameters(MinMaxClient)) == {
        "perturbation",
        "gamma_init",
        "tau",
        "omniscient",
    }


def env_for(cfg, pid=0):
    x = torch.rand(8, 1, 2, 2)
    y = torch.randint(0, 3, (8,))
    return ClientEnv(pid, x, y, None, cfg, torch.device("cpu"))


def tiny_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def test_build_client_validates_params_through_the_registry():
    cfg = cfg_with("min_max", perturbation="nope")
    with pytest.raises(ConfigError, match="perturbation"):
        registry.build_client(env_for(cfg), True, model=tiny_model())
    cfg = cfg_with("alie", z=1.0, omniscient=False)
    client = registry.build_client(env_for(cfg), True, model=tiny_model())
    assert isinstance(client, AlieClient) and not client.adversary.omniscient


# ---------------------------------------------------------- strategy path


SHAPES = [(2, 2), (3,)]


def fit_res(arrays, n, pid, metrics):
    return (
        None,
        FitRes(
            Status(Code.OK, ""),
            ndarrays_to_parameters(arrays),
            n,
            {"partition_id": pid, **metrics},
        ),
    )


def fedavg(init, **kw):
    from strategies.fedavg import FedAvg

    strategy = FedAvg(initial_parameters=ndarrays_to_parameters(init), device="cpu", **kw)
    strategy.initialize_parameters(None)
    return strategy


def flat(arrays):
    return np.concatenate([a.ravel() for a in arrays])


@pytest.mark.parametrize("weighted", [False, True])
def test_fedavg_with_ipm_adversary_gives_the_expected_global_model(weighted):
    rng = np.random.default_rng(0)
    init = [rng.normal(size=s).astype(np.float32) for s in SHAPES]
    models = [[rng.normal(size=s).astype(np.float32) for s in SHAPES] for _ in range(5)]
    counts = [10, 20, 30, 40, 50]
    malicious = {1, 3}
    attack = {"attack_active": True, "malicious": True}
    results = [fit_res(models[i], counts[i], i, attack if i in malicious else {}) for i in range(5)]
    cfg = cfg_with("ipm", epsilon=0.1)
    cfg.attack.malicious_ids = sorted(malicious)
    strategy = fedavg(init, weighted=weighted, adversary=IpmClient.server_adversary(cfg))
    params, _ = strategy.aggregate_fit(1, results, [])

    g0 = flat(init).astype(np.float64)
    updates = np.stack([flat(m) - flat(init) for m in models]).astype(np.float64)
    honest = [0, 2, 4]
    forged = -0.1 * updates[honest].mean(axis=0)
    updates[sorted(malicious)] = forged
    w = np.asarray(counts, np.float64) if weighted else np.ones(5)
    expected = g0 + (w[:, None] * updates).sum(axis=0) / w.sum()
    np.testing.assert_allclose(flat(parameters_to_ndarrays(params)), expected, atol=1e-5)


def test_fedavg_without_malicious_ids_leaves_tagged_rows_alone():
    rng = np.random.default_rng(1)
    init = [np.zeros(s, np.float32) for s in SHAPES]
    models = [[rng.normal(size=s).astype(np.float32) for s in SHAPES] for _ in range(3)]
    results = [fit_res(models[i], 1, i, {"attack_active": True}) for i in range(3)]
    strategy = fedavg(init, weighted=False, adversary=IpmClient.build_adversary())
    params, _ = strategy.aggregate_fit(1, results, [])
    expected = np.mean([flat(m) for m in models], axis=0)
    np.testing.assert_allclose(flat(parameters_to_ndarrays(params)), expected, atol=1e-6)


def test_attack_clients_reply_through_fit_and_get_forged_by_the_strategy():
    cfg = cfg_with("ipm", epsilon=0.5)
    cfg.attack.malicious_ids = [1]
    model = tiny_model()
    init = [p.detach().numpy().copy() for p in model.state_dict().values()]
    honest = registry.build_client(env_for(cfg, 0), False, model=tiny_model())
    attacker = registry.build_client(env_for(cfg, 1), True, model=tiny_model())
    replies = [c.fit(init, {"server_round": 1}) for c in (honest, attacker)]
    assert replies[1][2][ACTIVE_TAG] is True and replies[1][2]["malicious"] is True
    results = [
        (None, FitRes(Status(Code.OK, ""), ndarrays_to_parameters(w), n, m)) for w, n, m in replies
    ]
    strategy = fedavg(init, weighted=False, adversary=IpmClient.server_adversary(cfg))
    params, _ = strategy.aggregate_fit(1, results, [])
    u0 = flat(replies[0][0]) - flat(init)
    expected = flat(init) + (u0 - 0.5 * u0) / 2
    np.testing.assert_allclose(flat(parameters_to_ndarrays(params)), expected, atol=1e-5)


def test_parameters_are_declared_once_in_the_attack_dataclass():
    for cls in NAMES.values():
        fields = [f.name for f in dataclasses.fields(cls.attack_type)]
        assert registry._user_parameters(cls) == [*fields, "omniscient"]


def test_a_message_api_adversary_is_the_simulations():
    cfg = cfg_with("ipm", epsilon=0.5)
    cfg.attack.malicious_ids = sorted(MALICIOUS)
    u = round_matrix()
    simulation = IpmClient.server_adversary(cfg)(u, context(PIDS, METRICS))
    app = colluding_adversary(Ipm(epsilon=0.5), MALICIOUS)(u, context(PIDS, METRICS))
    assert torch.equal(simulation, app)
    with pytest.raises(ValueError, match="omniscient"):
        colluding_adversary(Ipm(), MALICIOUS, omniscient="no")


def test_a_message_api_strategy_takes_the_adversary_at_construction():
    from flsec_flower.app.message_api import message_strategy

    adversary = colluding_adversary(Ipm(), {3})
    strategy = message_strategy("krum", {"f": 1}, rule_kwargs={"adversary": adversary})
    assert strategy.rule.adversary is adversary
