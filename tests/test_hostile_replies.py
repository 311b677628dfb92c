"""One bad reply is rejected, named and recorded; the round aggregates the others.

Every case is a hand-built ``FitRes`` next to three honest ones: the new model
must be the mean of the honest models, and the diagnostics must name the bad
reply and the reason.
"""

import logging
import zlib

import numpy as np
import pytest
from flwr.common import Code, FitRes, Parameters, Status, ndarrays_to_parameters
from flwr.common import parameters_to_ndarrays as decode

from strategies import FedAvg
from strategies.base import MAX_NUM_EXAMPLES

SHAPES = [(3, 2), (2,)]


class Proxy:
    """The only part of a ClientProxy the base reads: its node id."""

    def __init__(self, cid):
        self.cid = cid


def arrays(rng, dtype=np.float32):
    return [rng.normal(size=s).astype(dtype) for s in SHAPES]


def reply(params, num_examples=10, metrics=None, cid="node"):
    if not isinstance(params, Parameters):
        params = ndarrays_to_parameters(params)
    return Proxy(cid), FitRes(Status(Code.OK, ""), params, num_examples, metrics or {})


def honest_round(rng):
    models = [arrays(rng) for _ in range(3)]
    return models, [reply(m, 10, {"partition_id": i}) for i, m in enumerate(models)]


def run(bad_replies, rng, caplog):
    models, results = honest_round(rng)
    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters([np.zeros(s, np.float32) for s in SHAPES]),
        device="cpu",
        weighted=False,
    )
    strategy.initialize_parameters(None)
    with caplog.at_level(logging.WARNING, logger="flsec"):
        params, metrics = strategy.aggregate_fit(1, results[:1] + bad_replies + results[1:], [])
    expected = [np.mean([m[k] for m in models], axis=0) for k in range(len(SHAPES))]
    for got, want in zip(decode(params), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    diag = strategy.diagnostics[1]
    assert diag.partition_ids == [0, 1, 2]
    assert metrics["num_rejected"] == len(bad_replies) == len(diag.rejected)
    return diag.rejected, caplog.text


def junk_parameters(rng):
    return Parameters(tensors=[b"not an npy file", b"\x93NUMPY\x01\x00garbage"], tensor_type="")


PID = {"partition_id": 7}
CASES = {
    "pid string": (lambda r: reply(arrays(r), 10, {"partition_id": "abc"}), "not an integer"),
    "pid nan": (lambda r: reply(arrays(r), 10, {"partition_id": float("nan")}), "not finite"),
    "pid inf": (lambda r: reply(arrays(r), 10, {"partition_id": float("inf")}), "not finite"),
    "pid -inf": (lambda r: reply(arrays(r), 10, {"partition_id": float("-inf")}), "not finite"),
    "pid negative": (lambda r: reply(arrays(r), 10, {"partition_id": -2}), "negative"),
    "pid fraction": (lambda r: reply(arrays(r), 10, {"partition_id": 1.5}), "not an integer"),
    "pid bool": (lambda r: reply(arrays(r), 10, {"partition_id": True}), "not an integer"),
    "pid missing": (lambda r: reply(arrays(r), 10, {"loss": 0.1}), "no partition_id"),
    "undecodable bytes": (lambda r: reply(junk_parameters(r), 10, PID), "do not decode"),
    "wrong dtype": (lambda r: reply(arrays(r, np.float64), 10, PID), "dtype float64"),
    "integer dtype": (lambda r: reply(arrays(r, np.int32), 10, PID), "dtype int32"),
    "too few arrays": (lambda r: reply(arrays(r)[:1], 10, PID), "expected 2 arrays"),
    "too many arrays": (lambda r: reply([*arrays(r), np.zeros(1)], 10, PID), "expected 2 arrays"),
    "wrong shape": (lambda r: reply([arrays(r)[0].T, arrays(r)[1]], 10, PID), "shape"),
    "empty": (lambda r: reply(Parameters(tensors=[], tensor_type=""), 10, PID), "empty update"),
    "empty arrays": (lambda r: reply([np.zeros((0,), np.float32)] * 2, 10, PID), "shape"),
    "nan values": (
        lambda r: reply([np.full((3, 2), np.nan, np.float32), arrays(r)[1]], 10, PID),
        "non-finite",
    ),
    "inf values": (
        lambda r: reply([arrays(r)[0], np.full(2, -np.inf, np.float32)], 10, PID),
        "non-finite",
    ),
    "num_examples negative": (lambda r: reply(arrays(r), -5, PID), "not a positive count"),
    "num_examples zero": (lambda r: reply(arrays(r), 0, PID), "not a positive count"),
    "num_examples nan": (lambda r: reply(arrays(r), float("nan"), PID), "not a positive count"),
    "num_examples inf": (lambda r: reply(arrays(r), float("inf"), PID), "not a positive count"),
    "num_examples absurd": (lambda r: reply(arrays(r), MAX_NUM_EXAMPLES + 1, PID), "exceeds"),
    "num_examples string": (lambda r: reply(arrays(r), "10", PID), "not a number"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_bad_reply_is_rejected_and_the_rest_aggregated(case, caplog):
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    make, reason = CASES[case]
    rejected, log = run([make(rng)], rng, caplog)
    assert reason in rejected[0].reason
    name = rejected[0].client
    assert name in log and reason in log
    if case.startswith("pid"):
        assert rejected[0].partition_id is None and name == "client node (reply 1)"
    else:
        assert rejected[0].partition_id == 7 and name == "partition 7"


def test_a_duplicated_partition_id_rejects_every_claimant(caplog):
    rng = np.random.default_rng(11)
    bad = [reply(arrays(rng), 10, {"partition_id": 9}), reply(arrays(rng), 10, {"partition_id": 9})]
    rejected, _ = run(bad, rng, caplog)
    assert [r.partition_id for r in rejected] == [9, 9]
    assert all("claimed by 2 replies" in r.reason for r in rejected)


def test_a_reply_copying_an_honest_id_knocks_out_both_but_not_the_round(caplog):
    """Neither reply can be attributed, so neither is aggregated; the round still runs."""
    rng = np.random.default_rng(12)
    models, results = honest_round(rng)
    copy = reply(arrays(rng), 10, {"partition_id": 1})
    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters([np.zeros(s, np.float32) for s in SHAPES]),
        device="cpu",
        weighted=False,
    )
    strategy.initialize_parameters(None)
    params, _ = strategy.aggregate_fit(1, [*results, copy], [])
    expected = [(models[0][k] + models[2][k]) / 2 for k in range(len(SHAPES))]
    for got, want in zip(decode(params), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert strategy.diagnostics[1].partition_ids == [0, 2]


def test_metrics_of_any_mapping_type_are_read():
    """Flower hands replies over in its own mapping types, not always a dict."""
    from types import MappingProxyType

    from strategies.base import read_partition_id

    assert read_partition_id(MappingProxyType({"partition_id": 4})) == (4, None)
    assert read_partition_id(None) == (None, "no partition_id metric")


def test_rejections_are_in_the_round_record():
    rng = np.random.default_rng(13)
    _, results = honest_round(rng)
    strategy = FedAvg(
        initial_parameters=ndarrays_to_parameters([np.zeros(s, np.float32) for s in SHAPES]),
        device="cpu",
    )
    strategy.initialize_parameters(None)
    seen = {}
    strategy.round_listener = lambda r, rec: seen.update({r: rec})
    bad = reply(arrays(rng), 10, {"partition_id": "abc"}, cid="n5")
    params, _ = strategy.aggregate_fit(1, [*results, bad], [])
    strategy.evaluate(1, params)
    assert seen[1]["num_rejected"] == 1
    assert seen[1]["rejected"] == [
        {
            "partition_id": None,
            "client": "client n5 (reply 3)",
            "reason": "partition_id 'abc' is not an integer",
        }
    ]
