"""The aggregation benchmark's cap on Flower's calls (``benchmarks/capped.py``).

A fake reference that sleeps far longer than a tiny cap must come back
flagged as capped, with no time or ratio a fit or goal could read as measured;
a fast one must come back measured; a failing one must say why. No timing
is asserted beyond "stopped after at least the cap".
"""

import multiprocessing
import os
import signal
import sys
import time

import numpy as np
import pytest

from benchmarks.capped import ReferenceCallError, record_reference, run_capped, speedup

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the cap forks (Linux)")

CAP = 0.2
SLEEP = 60.0  # far above the cap: the child is killed long before it ends


def sleeper() -> np.ndarray:
    time.sleep(SLEEP)
    return np.zeros(3, np.float32)


def test_a_call_over_the_cap_is_stopped_and_flagged():
    start = time.perf_counter()
    timing = run_capped(sleeper, CAP)
    assert timing.capped
    assert timing.output is None
    assert timing.seconds >= CAP
    assert time.perf_counter() - start < SLEEP  # killed, not waited for
    assert multiprocessing.active_children() == []


def test_a_call_under_the_cap_returns_its_output_from_the_child():
    parent = os.getpid()
    timing = run_capped(lambda: np.array([os.getpid() != parent, 2.5]), 30.0)
    assert not timing.capped
    np.testing.assert_array_equal(timing.output, [1.0, 2.5])  # it ran in another process


def test_without_a_cap_the_call_runs_here():
    timing = run_capped(os.getpid, None)
    assert (timing.output, timing.capped) == (os.getpid(), False)


def test_an_error_in_the_reference_is_raised_with_its_message():
    def boom() -> None:
        raise ValueError("boom")

    with pytest.raises(ReferenceCallError, match="ValueError: boom"):
        run_capped(boom, 30.0)


def test_a_reference_process_that_dies_is_reported():
    with pytest.raises(ReferenceCallError, match="died"):
        run_capped(lambda: os.kill(os.getpid(), signal.SIGKILL), 30.0)


def test_a_capped_row_holds_a_lower_bound_and_no_time():
    row = {"rule": "krum", "ours_s": 0.01}
    record_reference(row, "legacy", sleeper, CAP, np.zeros(3, np.float32))
    assert row["legacy_capped"] is True
    assert row["legacy_cap_s"] == CAP
    assert row["legacy_stopped_after_s"] >= CAP
    assert row["legacy_speedup_lower_bound"] == row["legacy_stopped_after_s"] / 0.01
    assert not {"legacy_s", "legacy_speedup", "legacy_diff"} & row.keys()
    assert speedup(row, "legacy") == (row["legacy_speedup_lower_bound"], True)


def test_a_finished_row_under_a_cap_is_measured_and_says_it_was_not_capped():
    row = {"rule": "median", "ours_s": 1e-3}
    ours = np.array([1.0, 2.0, 3.0], np.float32)
    flower = np.array([1.0, 2.5, 3.0], np.float32)
    record_reference(row, "msg", lambda: time.sleep(0.02) or flower, 30.0, ours, offset=1e-4)
    assert row["msg_capped"] is False
    assert row["msg_diff"] == 0.5
    assert row["msg_s"] == pytest.approx(row["msg_total_s"] - 1e-4)
    assert speedup(row, "msg") == (row["msg_s"] / 1e-3, False)


def test_without_a_cap_a_row_has_no_capped_field():
    row = {"rule": "median", "ours_s": 1.0}
    record_reference(row, "legacy", lambda: np.ones(2), None, np.ones(2))
    assert "legacy_capped" not in row
    assert row["legacy_diff"] == 0.0


def test_a_failed_reference_is_recorded_not_raised():
    row = {"rule": "bulyan", "ours_s": 1.0}
    record_reference(row, "legacy", lambda: os.kill(os.getpid(), signal.SIGKILL), 30.0, None)
    assert "died" in row["legacy_failed"]
    assert speedup(row, "legacy") == (None, False)


def test_goals_and_table_read_a_bound_as_a_bound(monkeypatch):
    monkeypatch.syspath_prepend("benchmarks")
    aggregators = pytest.importorskip("aggregators")
    cell = {"n": 1000, "d": 1_000_000, "msg_skipped": "memory"}
    rows = [
        cell
        | {"rule": "krum", "ours_s": 10.0, "legacy_capped": True, "legacy_cap_s": 300.0}
        | {"legacy_stopped_after_s": 300.0, "legacy_speedup_lower_bound": 30.0},
        cell
        | {"rule": "bulyan", "ours_s": 400.0, "legacy_capped": True, "legacy_cap_s": 300.0}
        | {"legacy_stopped_after_s": 300.0, "legacy_speedup_lower_bound": 0.75},
        cell | {"rule": "median", "ours_s": 1.0, "legacy_predicted_s": 5000.0},
    ]
    goals = aggregators.goals(rows)
    assert goals["slower_than_flower"] == []
    unproven = "\n".join(goals["not_proven"])
    assert "krum n=1000 d=1e+06 vs legacy" not in unproven
    assert "bulyan n=1000 d=1e+06 vs legacy: > 0.75x (capped)" in unproven
    assert "median n=1000 d=1e+06 vs legacy: skipped, predicted 5000 s (not run)" in unproven
    assert "krum n=1000 d=1e+06 vs msg: skipped: memory" in unproven
    krum_line = aggregators.grid_table(rows).splitlines()[1].split()
    assert krum_line[4:8] == [">", "300", ">", "30.0x"]
