"""Server-side hooks reach a strategy through its constructor (issue 11, item 4)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from flsec_flower.aggregation import RoundContext
from flsec_flower.app import registry
from flsec_flower.config import StrategyConfig, WrapperConfig


def trainer(global_flat, x, y, steps=None, server_round=1, reference_size=None):
    return torch.zeros_like(global_flat)


def test_each_rule_and_wrapper_gets_the_hooks_its_constructor_takes():
    sizes = []

    def root(params):
        sizes.append(params["root_size"])
        return torch.zeros(params["root_size"], 2), torch.zeros(params["root_size"])

    hooks = {"local_trainer": lambda _: trainer, "root_data": root}
    cfg = StrategyConfig(
        name="fltrust",
        params={"root_size": 7},
        wrappers=[WrapperConfig(name="norm_clip", params={"max_norm": 1.0})],
    )
    outer = registry.build_strategy(cfg, hooks, device="cpu")
    inner = outer.inner
    assert sizes == [7]
    assert inner.root_data[0].shape == (7, 2)
    assert inner.local_trainer is trainer and outer.local_trainer is trainer
    assert not hasattr(outer, "root_data")


def test_the_default_root_size_reaches_the_hook():
    seen = []
    registry.build_strategy(
        StrategyConfig(name="fang_rejection", params={"f": 1}),
        {"root_data": lambda params: seen.append(params["root_size"])},
        device="cpu",
    )
    assert seen == [100]


def test_hooks_are_not_config_parameters():
    names = {p.name for p in registry.parameters(registry.RULES["fltrust"])}
    assert names.isdisjoint(registry.HOOKS)
    with pytest.raises(registry.ConfigError, match="root_data: unknown parameter"):
        registry.build_strategy(
            StrategyConfig(name="fltrust", params={"root_data": 1}), device="cpu"
        )


def test_an_unknown_hook_is_refused():
    with pytest.raises(ValueError, match="unknown server hooks \\['truth'\\]"):
        registry.build_strategy(StrategyConfig(name="krum", params={"f": 1}), {"truth": id})


# ------------------------------------------------------------ ground truth
TRUTH = frozenset({101, 102})


def _held(value) -> bool:
    """Whether ``value`` is, or holds in a container, the ground-truth set."""
    if isinstance(value, (set, frozenset)):
        return value == TRUTH
    if isinstance(value, dict):
        return any(_held(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_held(v) for v in value)
    return False


def _required(cls) -> dict:
    return {p.name: 1 for p in registry.parameters(cls) if p.default is p.empty}


def test_the_round_context_has_no_ground_truth():
    names = {f.name for f in dataclasses.fields(RoundContext)}
    assert not any("malicious" in n or "attacker" in n for n in names), names


@pytest.mark.parametrize("name", sorted(registry.RULES))
def test_no_rule_has_or_receives_ground_truth_but_the_oracle(name):
    truth = {"malicious_partition_ids": lambda _: TRUTH}
    cls = registry.RULES[name]
    strategy = registry.build_strategy(
        StrategyConfig(name=name, params=_required(cls)), truth, device="cpu"
    )
    holders = sorted(k for k, v in vars(strategy).items() if _held(v))
    assert holders == (["malicious_partition_ids"] if name == "oracle" else []), holders


@pytest.mark.parametrize("name", sorted(registry.WRAPPERS))
def test_no_wrapper_has_or_receives_ground_truth(name):
    cls = registry.WRAPPERS[name]
    cfg = StrategyConfig(name="fedavg", wrappers=[WrapperConfig(name=name, params=_required(cls))])
    strategy = registry.build_strategy(
        cfg, {"malicious_partition_ids": lambda _: TRUTH}, device="cpu"
    )
    assert not any(_held(v) for v in vars(strategy).values())
    assert not any(_held(v) for v in vars(strategy.inner).values())


def test_the_oracle_refuses_bucket_means():
    oracle = registry.RULES["oracle"](device="cpu", malicious_partition_ids=TRUTH)
    ctx = RoundContext(1, [-1, -2], torch.ones(2), torch.zeros(1), torch.Generator())
    with pytest.raises(ValueError, match="OracleSGD got 2 rows that are no client's"):
        oracle.aggregate_updates(torch.zeros(2, 1), ctx)
