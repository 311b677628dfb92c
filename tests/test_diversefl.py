import io
import logging

import numpy as np
import pytest
import torch
from flwr.common import (
    Code,
    GetPropertiesRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from clients import HonestClient
from flsec_flower.aggregation import RoundContext
from flsec_flower.app.registry import build_strategy
from flsec_flower.config import (
    ConfigError,
    DataConfig,
    ExperimentConfig,
    StrategyConfig,
    from_dict,
)
from flsec_flower.experiment import client_env
from strategies import DiverseFL, OracleSGD
from strategies.diversefl import SAMPLE_QUERY, decode_sample, diversefl
from strategies.oracle import oracle_mean


class FakeProxy(ClientProxy):
    """Forwards get_properties to a NumPyClient in process, counting the queries."""

    def __init__(self, cid, client):
        super().__init__(cid)
        self.client = client
        self.queries = []

    def get_properties(self, ins, timeout, group_id):
        self.queries.append(dict(ins.config))
        return GetPropertiesRes(Status(Code.OK, ""), self.client.get_properties(ins.config))

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):
        raise NotImplementedError


class StubClient:
    """A client whose get_properties answers with fixed properties."""

    def __init__(self, pid, sample):
        self.pid, self.sample = pid, sample

    def get_properties(self, config):
        if config.get("query") == SAMPLE_QUERY:
            return {SAMPLE_QUERY: self.sample}
        return {"partition_id": self.pid}


def npz(x, y):
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


class LabelTrainer:
    """Toy local procedure: the update is the label histogram (4 classes) of the sample."""

    def __init__(self):
        self.steps_seen = []

    def __call__(self, global_flat, x, y, steps=None, server_round=1, reference_size=None):
        self.steps_seen.append(steps)
        return torch.bincount(y, minlength=4).to(torch.float32) / len(y)

    def steps_for(self, num_examples):
        return 3 * num_examples


label_trainer = LabelTrainer()


@pytest.fixture
def make_strategy(initialised_strategy):
    """``make_strategy(**kwargs)``: DiverseFL from a zero model of 4 weights, toy trainer."""

    def build(**kw):
        kw.setdefault("local_trainer", label_trainer)
        return initialised_strategy(DiverseFL, [np.zeros(4, np.float32)], **kw)

    return build


def ctx_for(n, pids=None, trainer=None):
    return RoundContext(
        server_round=1,
        partition_ids=list(range(n)) if pids is None else pids,
        num_examples=torch.ones(n),
        global_params=torch.zeros(2),
        generator=torch.Generator().manual_seed(0),
        local_trainer=trainer,
    )


# ---------------------------------------------------------------- pure rule
def test_flags_sign_flipped_and_huge_keeps_honest():
    g = torch.tensor([[1.0, 1.0], [2.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    u = torch.tensor(
        [
            [1.2, 0.8],  # honest: positive, ratio 1.02
            [3.0, 0.5],  # honest: positive, ratio 1.52
            [-1.0, -1.0],  # sign-flipped: dot < 0
            [0.0, 1e30],  # huge: ratio 1e30
        ]
    )
    agg = diversefl(u, g)
    assert agg.selected == [0, 1] and agg.flagged == [2, 3]
    assert torch.allclose(agg.update, torch.tensor([2.1, 0.65]))
    assert torch.isfinite(agg.update).all()
    assert agg.scores[2].item() == pytest.approx(-1.0)


def test_norm_ratio_bounds_are_exclusive():
    g = torch.tensor([[1.0, 0.0]] * 4)
    u = torch.tensor([[0.5, 0.0], [0.51, 0.0], [1.99, 0.0], [2.0, 0.0]])
    assert diversefl(u, g).selected == [1, 2]
    assert diversefl(u, g, eps1=0.4, eps2=2.5).selected == [0, 1, 2, 3]


def test_all_flagged_keeps_the_model_and_zero_guides_reject():
    u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    agg = diversefl(u, torch.zeros(2, 2))
    assert torch.equal(agg.update, torch.zeros(2))
    assert agg.selected == [] and agg.flagged == [0, 1]


# -------------------------------------------------------------- the sample
def test_decode_round_trip_and_malformed_samples():
    x = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    dx, dy = decode_sample(npz(x, np.array([0, 1, 2])))
    assert torch.equal(dx, torch.from_numpy(x)) and dy.tolist() == [0, 1, 2]
    assert dy.dtype == torch.int64
    for bad in (
        b"not a zip",
        "text",
        npz(x, np.array([0, 1])),
        npz(x, np.array([0.0, 1.0, 2.0])),
        npz(np.full((1, 2), np.nan, np.float32), np.array([0])),
        npz(x[:0], np.array([], np.int64)),
        npz(x, np.array([0, -1, 2])),
    ):
        with pytest.raises(ValueError):
            decode_sample(bad)


def test_honest_client_shares_a_seeded_sample():
    cfg = ExperimentConfig(data=DataConfig(dataset="digits", num_clients=4))
    env = client_env(cfg, 1)
    client = HonestClient(env)
    assert client.get_properties({"query": "partition_id"}) == {"partition_id": 1}
    reply = client.get_properties({"query": SAMPLE_QUERY, "fraction": 0.05})
    again = HonestClient(env).get_properties({"query": SAMPLE_QUERY, "fraction": 0.05})
    assert set(reply) == {SAMPLE_QUERY} and reply == again
    x, y = decode_sample(reply[SAMPLE_QUERY])
    n = env.x.shape[0]
    assert x.shape[0] == round(0.05 * n) and x.shape[1:] == env.x.shape[1:]
    # every shared example is a row of the client's partition, with its label
    flat = env.x.reshape(n, -1)
    for xi, yi in zip(x.reshape(len(x), -1), y, strict=True):
        rows = (flat == xi).all(dim=1).nonzero().flatten()
        assert len(rows) >= 1 and yi in env.y[rows]


def test_configure_fit_collects_samples_once_by_partition_id(make_strategy):
    cfg = ExperimentConfig(data=DataConfig(dataset="digits", num_clients=3))
    proxies = [FakeProxy(f"node-{9 - p}", HonestClient(client_env(cfg, p))) for p in range(3)]
    manager = SimpleClientManager()
    for proxy in proxies:
        manager.register(proxy)
    strategy = make_strategy(fraction=0.03)
    params = ndarrays_to_parameters([np.zeros(4, np.float32)])
    strategy.configure_fit(1, params, manager)
    strategy.configure_fit(2, params, manager)
    assert sorted(strategy.samples) == [0, 1, 2]
    for p, proxy in enumerate(proxies):
        sample_queries = [q for q in proxy.queries if q.get("query") == SAMPLE_QUERY]
        assert sample_queries == [{"query": SAMPLE_QUERY, "fraction": 0.03}]
        n = client_env(cfg, p).x.shape[0]
        assert strategy.samples[p][0].shape[0] == max(1, round(0.03 * n))


# ------------------------------------------------------------ the strategy
def test_aggregate_fit_flags_by_partition_id(fit_res, make_strategy):
    strategy = make_strategy()
    balanced = npz(np.zeros((4, 1), np.float32), np.array([0, 1, 2, 3]))
    for pid in (10, 11, 12, 13):
        strategy.samples[pid] = decode_sample(balanced)  # guide = [0.25] * 4
    strategy.samples[14] = decode_sample(npz(np.zeros((1, 1), np.float32), np.array([0])))
    results = [
        fit_res([0.3, 0.2, 0.25, 0.25], 10),  # honest
        fit_res([0.2, 0.3, 0.3, 0.2], 11),  # honest
        fit_res([-0.25, -0.25, -0.25, -0.25], 12),  # sign flip
        fit_res([25.0, 25.0, 25.0, 25.0], 13),  # boosted x100
        fit_res([0.3, 0.3, 0.3, 0.3], 15),  # never shared a sample
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    diag = strategy.diagnostics[1]
    assert diag.selected == [10, 11]
    assert diag.flagged == [12, 13, 15]
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], [0.25, 0.25, 0.275, 0.225])


def test_guide_takes_the_clients_number_of_steps(fit_res, make_strategy):
    trainer = LabelTrainer()
    strategy = make_strategy(fraction=0.05, local_trainer=trainer)
    strategy.samples[3] = decode_sample(npz(np.zeros((4, 1), np.float32), np.array([0, 1, 2, 3])))
    strategy.aggregate_fit(1, [fit_res([0.25] * 4, 3)], [])
    # 4 shared examples at fraction 0.05 stand for an 80-example partition
    assert trainer.steps_seen == [trainer.steps_for(80)]


def test_all_flagged_round_returns_the_unchanged_model(caplog, fit_res, make_strategy):
    strategy = make_strategy()
    with caplog.at_level(logging.WARNING, logger="flsec"):
        params, _ = strategy.aggregate_fit(1, [fit_res([1.0, 0, 0, 0], 3)], [])
    np.testing.assert_array_equal(parameters_to_ndarrays(params)[0], np.zeros(4))
    assert strategy.diagnostics[1].flagged == [3]
    assert "no shared sample" in caplog.text and "accepted no update" in caplog.text


def test_bad_or_failing_samples_are_flagged_not_fatal(fit_res, make_strategy):
    strategy = make_strategy()
    proxies = [
        FakeProxy("a", StubClient(0, b"garbage")),
        FakeProxy("b", StubClient(1, npz(np.zeros((2, 1), np.float32), np.array([0, 9])))),
    ]
    manager = SimpleClientManager()
    for proxy in proxies:
        manager.register(proxy)
    strategy.configure_fit(1, ndarrays_to_parameters([np.zeros(4, np.float32)]), manager)
    assert list(strategy.samples) == [1]
    # label 9 makes the toy trainer's bincount longer than the model: training fails
    results = [fit_res([0.5, 0, 0, 0], 0), fit_res([0.5, 0, 0, 0], 1)]
    params, _ = strategy.aggregate_fit(1, results, [])
    assert strategy.diagnostics[1].flagged == [0, 1]
    np.testing.assert_array_equal(parameters_to_ndarrays(params)[0], np.zeros(4))


def test_needs_a_local_trainer(make_strategy):
    strategy = make_strategy()
    with pytest.raises(RuntimeError, match="local_trainer"):
        strategy.aggregate_updates(torch.ones(1, 4), ctx_for(1))


@pytest.mark.parametrize(
    "params",
    [{"fraction": 0.0}, {"fraction": 1.5}, {"eps1": 2.0, "eps2": 1.0}, {"eps1": -1.0}],
)
def test_bad_parameters_raise(params):
    with pytest.raises(ValueError, match=r"fraction|eps"):
        DiverseFL(device="cpu", **params)
    with pytest.raises(ConfigError, match="DiverseFL"):
        build_strategy(StrategyConfig(name="diversefl", params=params), device="cpu")


# -------------------------------------------------------------- OracleSGD
def test_oracle_averages_only_the_truly_honest():
    u = torch.tensor([[1.0], [3.0], [1e30], [-1e30]])
    oracle = OracleSGD(device="cpu", malicious_partition_ids={6, 7})
    agg = oracle.aggregate_updates(u, ctx_for(4, pids=[4, 5, 6, 7]))
    assert agg.update.tolist() == [2.0]
    assert (agg.selected, agg.flagged) == ([0, 1], [2, 3])
    none = oracle_mean(u, torch.zeros(4, dtype=torch.bool))
    assert torch.equal(none.update, torch.zeros(1)) and none.selected == []


def test_oracle_through_aggregate_fit(fit_res, initialised_strategy):
    strategy = initialised_strategy(
        OracleSGD, [np.zeros(1, np.float32)], malicious_partition_ids=[2]
    )
    results = [fit_res([1.0], 0), fit_res([2.0], 1), fit_res([1e30], 2)]
    params, _ = strategy.aggregate_fit(1, results, [])
    assert parameters_to_ndarrays(params)[0].tolist() == [1.5]
    assert (strategy.diagnostics[1].selected, strategy.diagnostics[1].flagged) == ([0, 1], [2])


@pytest.mark.parametrize(("fraction", "shared"), [(0.01, 3), (0.03, 9)])
def test_config_sets_the_per_client_shared_fraction(fraction, shared):
    # DiverseFL's 1 % and 3 % settings: a client of 300 examples shares 3 or 9
    cfg = from_dict({"strategy": {"name": "diversefl", "params": {"fraction": fraction}}})
    strategy = build_strategy(cfg.strategy, device="cpu")
    assert strategy.fraction == fraction
    env = client_env(ExperimentConfig(data=DataConfig(dataset="digits", num_clients=4)), 0)
    env.x, env.y = torch.rand(300, 64), torch.arange(300) % 10
    x, _ = decode_sample(HonestClient(env).shared_sample(strategy.fraction))
    assert x.shape[0] == shared


def test_shared_fraction_out_of_range_names_the_key():
    cfg = from_dict({"strategy": {"name": "diversefl", "params": {"fraction": 0.0}}})
    with pytest.raises(ConfigError, match=r"strategy\.params"):
        build_strategy(cfg.strategy, device="cpu")
