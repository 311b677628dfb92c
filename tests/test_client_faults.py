"""A client that raises, whose Ray actor dies, or that hangs does not end the run (Ray, slow)."""

import json
import os
import time
from pathlib import Path

import pytest

from flsec_flower import load_results
from flsec_flower.app import simulation
from flsec_flower.app.client_app import make_cell_client_fn
from flsec_flower.checkpoint import read_status
from flsec_flower.config import from_dict
from strategies.base import TooFewClientsError

pytestmark = pytest.mark.slow

BAD = 3
"""The partition that fails on purpose."""
CLIENT_TIMEOUT = 90.0
"""Counts from when a round sends, actor start-up (round 1) and queueing included: generous."""
HANG_LIMIT = CLIENT_TIMEOUT + 30.0
"""A hanging client returns once the server has given up on its round, at the latest after this."""


def faulty_federation(faults: dict[int, str], out_dir: Path):
    """A ``make_cell_client_fn`` whose partition :data:`BAD` fails in the rounds of ``faults``.

    A fault is ``"raise"`` (an exception in ``fit``), ``"exit"`` (``os._exit``
    kills the Ray actor) or ``"hang"`` (no reply until the server has given up
    on the round after the ``client_timeout``, i.e. written its metrics line
    under ``out_dir``, or :data:`HANG_LIMIT` has passed; the simulation waits
    for the actor to return before it ends). Built inside a function so Ray
    ships it by value to the actors.
    """

    def recorded(server_round):
        for path in out_dir.glob("*/metrics.jsonl"):
            lines = path.read_text().splitlines()
            if any(json.loads(line)["round"] == server_round for line in lines if line.strip()):
                return True
        return False

    def make(cfgs, indices):
        inner = make_cell_client_fn(cfgs, indices)

        def client_fn(context):
            client = inner(context)
            if int(context.node_config["partition-id"]) != BAD:
                return client
            honest_fit = client.fit

            def fit(ins):
                server_round = int(ins.config["server_round"])
                mode = faults.get(server_round)
                if mode == "raise":
                    raise RuntimeError("injected failure")
                if mode == "exit":
                    os._exit(1)
                if mode == "hang":
                    deadline = time.monotonic() + HANG_LIMIT
                    while not recorded(server_round) and time.monotonic() < deadline:
                        time.sleep(0.5)
                return honest_fit(ins)

            client.fit = fit
            return client

        return client_fn

    return make


def config(tmp_path, rounds, **extra):
    return from_dict(
        {
            "name": "faults",
            "rounds": rounds,
            "output_dir": str(tmp_path),
            "data": {"dataset": "digits", "num_clients": 4, "partition": {"kind": "iid"}},
            "model": {"name": "mlp"},
            **extra,
        }
    )


@pytest.mark.parametrize(
    "faults",
    [{2: "raise", 3: "exit"}, {2: "hang"}],
    ids=["raise-then-exit", "hang"],
)
def test_rounds_go_on_without_the_failed_client(tmp_path, monkeypatch, faults):
    """One fault per round (an exception, then an actor exit; or a hang), then one more round."""
    monkeypatch.setattr(simulation, "make_cell_client_fn", faulty_federation(faults, tmp_path))
    rounds = max(faults) + 1
    hang = "hang" in faults.values()
    cfg = config(tmp_path, rounds, client_timeout=CLIENT_TIMEOUT if hang else None)
    run_dir = simulation.run_experiment(cfg, progress=False)
    df = load_results(run_dir).set_index("round")
    assert list(df.index) == list(range(rounds + 1))
    for server_round, mode in faults.items():
        assert df.loc[server_round, "num_failures"] == 1, mode
        assert df.loc[server_round, "participants"] == [0, 1, 2], mode
        if mode == "raise":
            assert "injected failure" in df.loc[server_round, "failures"][0]
    assert df.loc[1, "num_failures"] == 0 and df.loc[1, "participants"] == [0, 1, 2, 3]
    # The round after the last fault runs to the end; after an actor exit another client
    # may still meet the restarting actor there (Ray's ActorUnavailableError), so it is not
    # required to be clean.
    assert read_status(run_dir)["status"] == "completed"


def test_too_few_clients_ends_the_run_with_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(
        simulation, "make_cell_client_fn", faulty_federation({2: "raise"}, tmp_path)
    )
    with pytest.raises(TooFewClientsError, match="round 2: 3 client\\(s\\) replied, 1 failed"):
        simulation.run_experiment(config(tmp_path, 3, min_fit_clients=4), progress=False)
    (run_dir,) = tmp_path.iterdir()
    status = read_status(run_dir)
    assert (status["status"], status["rounds_completed"]) == ("failed", 1)
    assert "min_fit_clients needs 4" in status["message"]
