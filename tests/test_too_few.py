"""Too few clients for a rule's f: an error by default, an explicit reduced f on request.

Issue 13 point 5: Krum(f=1) with 4 clients and Bucketing(Krum(f=1), s=2) used
to change the rule with only a log line. Now ``on_too_few="raise"`` (default)
raises naming the keys, and ``"reduce_f"`` records the f it used every round.
"""

import pytest
import torch

from flsec_flower.aggregation import RoundContext
from flsec_flower.app.simulation import validate
from flsec_flower.config import ConfigError, from_dict
from strategies import NNM, Bucketing, Bulyan, FedAvg, Krum, MultiKrum, TrimmedMean
from strategies._too_few import TooFewClientsError
from strategies.krum import krum


def ctx_for(n, round_=1):
    return RoundContext(
        server_round=round_,
        partition_ids=list(range(n)),
        num_examples=torch.ones(n),
        global_params=torch.zeros(2),
        generator=torch.Generator().manual_seed(0),
    )


def rows(n, seed=0):
    return torch.randn((n, 2), generator=torch.Generator().manual_seed(seed))


def test_bucketing_that_leaves_krum_too_few_means_raises_naming_s_and_f():
    wrapped = Bucketing(Krum(f=1, device="cpu"), s=2, device="cpu")
    with pytest.raises(TooFewClientsError, match=r"s=2 turns n=4 updates into 2 means.*f=1"):
        wrapped.aggregate_updates(rows(4), ctx_for(4))


def test_bucketing_reduce_f_overrides_the_inner_policy_and_reports_f_used():
    u = rows(8)
    inner = Krum(f=2, device="cpu")  # 4 means allow f=0 only (n > 2f + 2)
    agg = Bucketing(inner, s=2, on_too_few="reduce_f", device="cpu").aggregate_updates(
        u, ctx_for(8)
    )
    assert agg.metrics == {"f_used": 0}
    assert agg.selected is not None and len(agg.selected) == 2  # one bucket = two clients


def test_reduce_f_uses_exactly_the_largest_valid_f():
    u = rows(7, seed=3)
    for cls, f, best in [(Krum, 5, 2), (MultiKrum, 5, 2), (Bulyan, 3, 1), (TrimmedMean, None, 3)]:
        kwargs = {"b": 9} if cls is TrimmedMean else {"f": f}
        agg = cls(**kwargs, on_too_few="reduce_f", device="cpu").aggregate_updates(u, ctx_for(7))
        assert agg.metrics == {"f_used": best}, cls.__name__
    assert torch.equal(
        Krum(f=5, on_too_few="reduce_f", device="cpu").aggregate_updates(u, ctx_for(7)).update,
        krum(u, 2).update,
    )


def test_valid_f_is_reported_unchanged():
    agg = Krum(f=1, device="cpu").aggregate_updates(rows(5), ctx_for(5))
    assert agg.metrics == {"f_used": 1}
    agg = NNM(Krum(f=1, device="cpu"), f=2, device="cpu").aggregate_updates(rows(5), ctx_for(5))
    assert agg.metrics == {"f_used": 1, "nnm_f_used": 2}


@pytest.mark.parametrize("bad", ["ignore", None, 1])
def test_unknown_policy_is_refused(bad):
    with pytest.raises(ValueError, match="on_too_few must be one of raise, reduce_f"):
        Krum(f=1, on_too_few=bad)
    with pytest.raises(ValueError, match="on_too_few"):
        Bucketing(FedAvg(), on_too_few=bad)


def config(strategy, clients_per_round=4):
    return from_dict(
        {"data": {"num_clients": 10}, "clients_per_round": clients_per_round, "strategy": strategy}
    )


def test_config_f_too_large_for_clients_per_round_is_a_config_error():
    with pytest.raises(ConfigError, match=r"strategy\.params\.f: Krum with f=1 needs n > 2f \+ 2"):
        validate(config({"name": "krum", "params": {"f": 1}}))
    with pytest.raises(ConfigError, match=r"strategy\.params\.b: TrimmedMean with b=2.*n=4"):
        validate(config({"name": "trimmed_mean", "params": {"b": 2}}))
    validate(config({"name": "krum", "params": {"f": 1, "on_too_few": "reduce_f"}}))
    validate(config({"name": "krum", "params": {"f": 1}}, clients_per_round=5))


def test_config_bucketing_names_both_keys():
    strategy = {"name": "krum", "params": {"f": 1}, "wrappers": [{"name": "bucketing"}]}
    with pytest.raises(ConfigError) as err:
        validate(config(strategy, clients_per_round=8))
    msg = str(err.value)
    assert msg.startswith("strategy.params.f: Krum with f=1")
    assert "strategy.wrappers[0].params.s=2 makes 4 bucket means of 8 updates" in msg
    strategy["wrappers"][0]["params"] = {"on_too_few": "reduce_f"}
    validate(config(strategy, clients_per_round=8))
    validate(config({**strategy, "wrappers": [{"name": "bucketing"}]}, clients_per_round=10))


def test_config_nnm_f_is_checked_under_its_own_key():
    strategy = {"name": "median", "wrappers": [{"name": "nnm", "params": {"f": 4}}]}
    with pytest.raises(ConfigError, match=r"strategy\.wrappers\[0\]\.params\.f: NNM with f=4"):
        validate(config(strategy))
