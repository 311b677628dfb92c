"""``flwr run`` on examples/message-api: our Krum inside our Bucketing in a Message-API app.

The app is run as a user runs it (its own ``pyproject.toml``, a local
SuperLink in simulation mode, runtime dependency installation disabled) and
writes the per-round accuracy of the global model on the held-out digits.

The attack part (a node running ``clients.mods.sign_flip_mod``) needs that
mod; until ``clients.mods`` exists the attack comparison is skipped and the
honest run must reach a sane accuracy.
"""

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.flwr_local import LocalFlower

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "message-api"
FEDERATION = {
    "num-supernodes": 10,
    "client-resources-num-cpus": 1,
    "client-resources-num-gpus": 0.0,
}


def run_example(flower: LocalFlower, tmp_path: Path, **config) -> dict[int, float]:
    results = tmp_path / f"{config['defence']}-{config['attack']}.json"
    row = flower.run(
        run_config={"num-server-rounds": 5, "results-file": str(results), **config},
        federation_config=FEDERATION,
    )
    log = "" if row["status"] == "finished:completed" else flower.logs(row["run-id"])
    assert row["status"] == "finished:completed", f"{row['status-details']}\n{log}"
    return {int(k): v for k, v in json.loads(results.read_text())["accuracy"].items()}


@pytest.fixture(scope="module")
def flower() -> Iterator[LocalFlower]:
    """One local SuperLink serving the example for every run of the module."""
    with LocalFlower(EXAMPLE) as local:
        yield local


def test_honest_run_of_krum_inside_bucketing_learns(flower, tmp_path):
    accuracy = run_example(flower, tmp_path, defence="krum-bucketing", attack="none")
    assert sorted(accuracy) == [0, 1, 2, 3, 4, 5]
    assert accuracy[5] > 0.6 > accuracy[0]  # 10 classes: chance is 0.1


@pytest.mark.skipif(
    importlib.util.find_spec("clients.mods") is None,
    reason="ATTACK PART: needs clients.mods.sign_flip_mod (Task D2, branch attackmods)",
)
def test_krum_inside_bucketing_beats_fedavg_under_the_sign_flip_mod(flower, tmp_path):
    attack = {"attack": "sign-flip", "num-attackers": 1, "attack-scale": 10.0}
    robust = run_example(flower, tmp_path, defence="krum-bucketing", **attack)
    plain = run_example(flower, tmp_path, defence="fedavg", **attack)
    assert robust[5] > plain[5] + 0.2, (robust, plain)
