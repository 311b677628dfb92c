"""Server-side hooks reach a strategy through its constructor (issue 11, item 4)."""

from __future__ import annotations

import pytest
import torch

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
