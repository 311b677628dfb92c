"""Attack scheduling: forced participation, the missed-attack flag, per-cell clocks."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from flwr.common import Code, FitRes, GetPropertiesRes, Status, ndarrays_to_parameters
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from flsec_flower import results as results_module
from flsec_flower.app.server_app import build_strategy
from flsec_flower.config import ConfigError, from_dict
from flsec_flower.experiment import participation_schedule
from flsec_flower.results import METRICS_FILE, SUMMARY_FILE, RunRecorder


class IdProxy(ClientProxy):
    """Answers the partition-id query; nothing else is used by configure_fit."""

    def __init__(self, cid, pid):
        super().__init__(cid)
        self.pid = pid

    def get_properties(self, ins, timeout, group_id):
        return GetPropertiesRes(Status(Code.OK, ""), {"partition_id": self.pid})

    def get_parameters(self, ins, timeout, group_id):
        raise NotImplementedError

    def fit(self, ins, timeout, group_id):
        raise NotImplementedError

    def evaluate(self, ins, timeout, group_id):
        raise NotImplementedError

    def reconnect(self, ins, timeout, group_id):
        raise NotImplementedError


def _cfg(**attack):
    return from_dict(
        {
            "rounds": 6,
            "clients_per_round": 1,  # fraction_fit 0.1 of 10 clients
            "data": {"dataset": "digits", "num_clients": 10},
            "model": {"name": "logreg"},
            "training": {"device": "cpu"},
            "strategy": {"device": "cpu"},
            "attack": {"name": "sign_flip", "malicious_ids": [7], "start_round": 3, **attack},
        }
    )


def _sampled(strategy, server_round):
    manager = SimpleClientManager()
    for pid in range(10):
        manager.register(IdProxy(f"node-{(pid * 37) % 10}", pid))
    params = ndarrays_to_parameters([np.zeros(1, np.float32)])
    return [proxy.pid for proxy, _ in strategy.configure_fit(server_round, params, manager)]


def _seeded_draw(seed, server_round):
    return [int(np.random.default_rng([seed, server_round]).choice(10, size=1)[0])]


def test_single_shot_attacker_is_sampled_in_round_t_under_fraction_0_1():
    cfg = _cfg(single_shot=True)
    assert participation_schedule(cfg) == {3: [7]}
    strategy = build_strategy(cfg, None)
    assert strategy.fraction_fit == pytest.approx(0.1)
    for r in range(1, 7):
        expected = [7] if r == 3 else _seeded_draw(0, r)
        assert _sampled(strategy, r) == expected
    # without forcing, round 3 is the seeded draw, which leaves the attacker out
    unforced = build_strategy(_cfg(single_shot=True, force_participation=False), None)
    assert _seeded_draw(0, 3) != [7] and _sampled(unforced, 3) == _seeded_draw(0, 3)


def test_wrapped_rule_samples_by_the_same_schedule():
    cfg = from_dict(
        _cfg(single_shot=True).to_dict()
        | {"strategy": {"name": "median", "wrappers": [{"name": "bucketing", "params": {"s": 1}}]}}
    )
    assert _sampled(build_strategy(cfg, None), 3) == [7]


def test_forced_attackers_must_fit_in_the_round():
    with pytest.raises(ConfigError, match=r"attack\.force_participation"):
        from_dict(
            _cfg(single_shot=True).to_dict()
            | {"attack": {"name": "sign_flip", "malicious_ids": [1, 7], "single_shot": True}}
        )


def test_round_record_lists_active_attackers_and_flags_a_missed_attack(tmp_path):
    cfg = _cfg(single_shot=True, force_participation=False)
    strategy = build_strategy(cfg, None)
    init = strategy.initial_parameters
    strategy.initialize_parameters(None)
    seen = {}
    strategy.round_listener = lambda r, rec: seen.update({r: rec})
    tagged = FitRes(Status(Code.OK, ""), init, 5, {"partition_id": 7, "attack_active": True})
    plain = FitRes(Status(Code.OK, ""), init, 5, {"partition_id": 2})
    strategy.aggregate_fit(3, [(None, tagged), (None, plain)], [])
    strategy.evaluate(3, init)
    assert seen[3]["attack_participants"] == [7]

    recorder = RunRecorder(tmp_path, cfg, frozenset({7}), progress=False)
    recorder.record(2, {"attack_participants": []})
    recorder.record(3, {"attack_participants": []})
    lines = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert "attack_missed" not in lines[0]
    assert lines[1]["attack_round"] is True and lines[1]["attack_missed"] is True


def test_each_cell_times_itself_from_start(tmp_path, monkeypatch):
    clock = iter([100.0, 250.0, 251.5, 254.0, 254.0])
    monkeypatch.setattr(results_module, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    cfg = from_dict({"rounds": 1, "model": {"name": "logreg"}})
    recorder = RunRecorder(tmp_path, cfg, progress=False)  # built at t=100
    recorder.start()  # its cell starts at t=250, after the earlier cells
    recorder.record(0, {"accuracy": 0.5, "loss": 1.0})  # t=251.5
    recorder.record(1, {"accuracy": 0.6, "loss": 0.9})  # t=254: finish
    lines = [json.loads(x) for x in (tmp_path / METRICS_FILE).read_text().splitlines()]
    assert [line["seconds"] for line in lines] == [1.5, 2.5]
    # the summary's wall time counts from start(), not from construction
    assert recorder.wall_seconds == 4.0
    assert pd.read_csv(tmp_path / SUMMARY_FILE)["wall_seconds"].tolist() == [4.0]


def test_num_malicious_zero_runs_no_attack_schedule():
    cfg = _cfg(single_shot=True)
    clean = from_dict(
        cfg.to_dict() | {"attack": {"name": "sign_flip", "num_malicious": 0, "single_shot": True}}
    )
    assert participation_schedule(clean) == {}


class CountingProxy(IdProxy):
    """An ``IdProxy`` that counts the partition-id queries it answers."""

    asked = 0

    def get_properties(self, ins, timeout, group_id):
        CountingProxy.asked += 1
        return super().get_properties(ins, timeout, group_id)


def test_strategies_sharing_a_partition_map_ask_each_client_once():
    manager = SimpleClientManager()
    for pid in range(10):
        manager.register(CountingProxy(f"node-{pid}", pid))
    params = ndarrays_to_parameters([np.zeros(1, np.float32)])
    shared: dict[str, int] = {}
    CountingProxy.asked = 0
    for _ in range(3):  # three experiments on one federation
        strategy = build_strategy(_cfg(), None)
        strategy.share_partition_map(shared)
        strategy.configure_fit(1, params, manager)
    assert CountingProxy.asked == 10
    assert shared == {f"node-{pid}": pid for pid in range(10)}
    alone = build_strategy(_cfg(), None)
    alone.configure_fit(1, params, manager)  # its own table: asks everyone again
    assert CountingProxy.asked == 20
