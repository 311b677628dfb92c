import collections
import math

import numpy as np
import pytest
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from hypothesis import given, settings
from hypothesis import strategies as st

from flsec_flower.aggregation import Aggregate, RoundContext
from flsec_flower.app.registry import build_strategy
from flsec_flower.config import ConfigError, StrategyConfig, WrapperConfig
from strategies import Bucketing, FedAvg, RobustStrategy
from strategies.bucketing import (
    bucket_groups,
    bucketize,
    group_context,
    group_means,
    map_back,
    resampling_groups,
)


def ctx_for(n, seed=0, pids=None):
    return RoundContext(
        server_round=1,
        partition_ids=list(range(n)) if pids is None else pids,
        num_examples=torch.arange(1, n + 1, dtype=torch.float32),
        global_params=torch.zeros(1),
        generator=torch.Generator().manual_seed(seed),
    )


class Recorder(RobustStrategy):
    """Inner rule that records what it sees, selects group 0 and flags group 1."""

    def aggregate_updates(self, updates, ctx):
        self.seen = (updates.clone(), ctx)
        return Aggregate(update=updates.mean(dim=0), selected=[0], flagged=[1])


def test_bucketing_fixed_generator_four_rows_s2():
    u = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(0)).tolist()
    y, groups = bucketize(u, 2, torch.Generator().manual_seed(0))
    assert groups == [perm[:2], perm[2:]]
    # seed 0 permutes to [0, 1, 3, 2]: buckets {0, 1} and {3, 2}
    assert groups == [[0, 1], [3, 2]]
    assert y.flatten().tolist() == [1.0, 5.0]


def test_last_bucket_is_smaller_and_averaged_over_its_size():
    groups = bucket_groups(5, 2, torch.Generator().manual_seed(3))
    assert [len(g) for g in groups] == [2, 2, 1]
    assert sorted(i for g in groups for i in g) == [0, 1, 2, 3, 4]
    u = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    means = group_means(u, groups)
    expected = [sum(u[i, 0].item() for i in g) / len(g) for g in groups]
    assert means.flatten().tolist() == pytest.approx(expected)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 12), s=st.integers(1, 5), seed=st.integers(0, 1000))
def test_resampling_uses_each_update_exactly_s_times(n, s, seed):
    groups = resampling_groups(n, s, torch.Generator().manual_seed(seed))
    assert len(groups) == n
    assert all(len(g) == s for g in groups)
    counts = collections.Counter(i for g in groups for i in g)
    assert counts == {i: s for i in range(n)}


def test_resampling_means_by_hand():
    u = torch.tensor([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])
    y, groups = bucketize(u, 2, torch.Generator().manual_seed(1), mode="resampling")
    expected = torch.stack([u[g].mean(dim=0) for g in groups])
    assert torch.allclose(y, expected)
    # the means of all T = n resampled rows average back to the plain mean
    assert torch.allclose(y.mean(dim=0), u.mean(dim=0))


def test_group_with_a_repeated_row_counts_it_twice():
    u = torch.tensor([[0.0], [3.0]])
    assert group_means(u, [[1, 1], [0, 1]]).flatten().tolist() == [3.0, 1.5]


def test_composes_with_mean_and_equal_buckets_keep_the_mean():
    rng = np.random.default_rng(0)
    u = torch.from_numpy(rng.normal(size=(6, 4)).astype(np.float32))
    wrapped = Bucketing(FedAvg(weighted=False, device="cpu"), s=2, device="cpu")
    agg = wrapped.aggregate_updates(u, ctx_for(6))
    assert torch.allclose(agg.update, u.mean(dim=0), atol=1e-6)
    assert agg.selected == list(range(6))


def test_composes_with_mean_unequal_buckets_by_hand():
    u = torch.tensor([[0.0], [1.0], [2.0], [3.0], [10.0]])
    wrapped = Bucketing(FedAvg(weighted=False, device="cpu"), s=2, device="cpu")
    agg = wrapped.aggregate_updates(u, ctx_for(5, seed=3))
    groups = bucket_groups(5, 2, torch.Generator().manual_seed(3))
    expected = np.mean([np.mean([u[i, 0].item() for i in g]) for g in groups])
    assert agg.update.item() == pytest.approx(expected)


def test_inner_sees_group_means_and_a_consistent_context():
    u = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    inner = Recorder(device="cpu")
    wrapped = Bucketing(inner, s=2, device="cpu")
    ctx = ctx_for(4, pids=[10, 11, 12, 13])
    agg = wrapped.aggregate_updates(u, ctx)
    seen, inner_ctx = inner.seen
    assert seen.flatten().tolist() == [1.0, 5.0]  # buckets {0, 1} and {3, 2}
    assert inner_ctx.partition_ids == [-1, -2]
    assert inner_ctx.num_examples.tolist() == [1.0 + 2.0, 4.0 + 3.0]
    # selected bucket 0 selects its members; flagged bucket 1 flags its members
    assert agg.selected == [0, 1]
    assert agg.flagged == [2, 3]


def test_map_back_resampling_flags_only_rows_whose_every_group_is_flagged():
    groups = [[0, 1], [1, 2], [2, 2]]
    out = map_back(Aggregate(torch.zeros(1), selected=[0], flagged=[1, 2]), groups)
    assert out.selected == [0, 1]
    assert out.flagged == [2]
    none = map_back(Aggregate(torch.zeros(1)), groups)
    assert none.selected is None and none.flagged is None


def test_group_context_pseudo_ids_and_sums():
    ctx = ctx_for(3, pids=[5, 6, 7])
    sub = group_context(ctx, [[0, 0], [1, 2], [2, 0]])
    assert sub.partition_ids == [-1, -2, -3]
    assert sub.num_examples.tolist() == [2.0, 5.0, 4.0]
    assert sub.client_metrics == []


def test_same_seed_same_result_other_seed_other_grouping():
    rng = np.random.default_rng(1)
    u = torch.from_numpy(rng.normal(size=(10, 3)).astype(np.float32))
    a = bucketize(u, 2, torch.Generator().manual_seed(4), mode="resampling")
    b = bucketize(u, 2, torch.Generator().manual_seed(4), mode="resampling")
    c = bucketize(u, 2, torch.Generator().manual_seed(5), mode="resampling")
    assert a[1] == b[1] and torch.equal(a[0], b[0])
    assert a[1] != c[1]


@pytest.mark.parametrize("mode", ["bucketing", "resampling"])
def test_huge_rows_stay_finite(mode):
    u = torch.ones((6, 4))
    u[0] = 1e30
    u[3] = -1e30
    y, _ = bucketize(u, 3, torch.Generator().manual_seed(0), mode=mode)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize(
    ("params", "key"), [({"s": 0}, "s"), ({"s": 1.5}, "s"), ({"mode": "shuffle"}, "mode")]
)
def test_bad_parameters_raise(params, key):
    with pytest.raises(ValueError, match=key):
        Bucketing(FedAvg(device="cpu"), device="cpu", **params)
    cfg = StrategyConfig(name="fedavg", wrappers=[WrapperConfig("bucketing", params)])
    with pytest.raises(ConfigError, match=rf"wrappers\[0\].*{key}"):
        build_strategy(cfg, device="cpu")


def test_registry_builds_bucketing_around_the_rule():
    cfg = StrategyConfig(
        name="fedavg",
        wrappers=[WrapperConfig("bucketing", {"s": 3, "mode": "resampling"})],
    )
    strategy = build_strategy(cfg, device="cpu")
    assert isinstance(strategy, Bucketing) and isinstance(strategy.inner, FedAvg)
    assert (strategy.s, strategy.mode) == (3, "resampling")


def test_aggregate_fit_reports_selected_and_flagged_partition_ids():
    init = [np.zeros(1, np.float32)]
    inner = Recorder(device="cpu")
    strategy = Bucketing(
        inner, s=2, device="cpu", seed=0, initial_parameters=ndarrays_to_parameters(init)
    )
    strategy.initialize_parameters(None)
    values = {20: 0.0, 21: 1.0, 22: 10.0, 23: 100.0}  # every pair has its own mean
    results = [
        (
            None,
            FitRes(
                Status(Code.OK, ""),
                ndarrays_to_parameters([np.array([v], np.float32)]),
                10,
                {"partition_id": pid},
            ),
        )
        for pid, v in values.items()
    ]
    params, _ = strategy.aggregate_fit(1, results, [])
    seen = inner.seen[0].flatten().tolist()
    first = next(
        {a, b} for a in values for b in values if a < b and (values[a] + values[b]) / 2 == seen[0]
    )
    diag = strategy.diagnostics[1]
    assert diag.selected == sorted(first)
    assert diag.flagged == sorted(set(values) - first)
    new_global = parameters_to_ndarrays(params)[0][0]
    assert math.isfinite(new_global)
    assert new_global == pytest.approx(sum(values.values()) / 4)
