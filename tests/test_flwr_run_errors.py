"""``flwr run`` with an unknown rule name fails the run with one line naming the key."""

from pathlib import Path

import pytest

from flsec_flower.app import registry
from tests.flwr_local import LocalFlower

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def test_unknown_strategy_name_fails_the_run_with_one_line(tmp_path):
    with LocalFlower(REPO) as flower:
        row = flower.run(
            run_config={"strategy.name": "krumm", "output_dir": str(tmp_path)},
            federation_config={"num-supernodes": 2, "client-resources-num-cpus": 1},
            timeout=300,
        )
        log = flower.logs(row["run-id"])
    assert row["status"] == "finished:failed", log
    assert "strategy.name: unknown name 'krumm'" in row["status-details"], log
    lines = [line for line in log.splitlines() if "krumm" in line]
    assert len(lines) == 1, log
    allowed = ", ".join(sorted(registry.RULES))
    assert lines[0].endswith(
        f"flsec: error: strategy.name: unknown name 'krumm'; allowed: {allowed}"
    )
    assert "Traceback" not in log
    assert list(tmp_path.iterdir()) == []
