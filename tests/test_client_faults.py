"""A client that raises, whose Ray actor dies, or that hangs does not end the run (Ray, slow)."""

import os
import time

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
FAULT_ROUND = 2


def faulty_federation(mode: str):
    """A ``make_cell_client_fn`` whose partition :data:`BAD` fails in round :data:`FAULT_ROUND`.

    ``mode``: ``"raise"`` (an exception in ``fit``), ``"exit"`` (``os._exit``
    kills the Ray actor) or ``"hang"`` (sleeps past ``client_timeout``). Built
    inside a function so Ray ships it by value to the actors.
    """

    def make(cfgs, indices):
        inner = make_cell_client_fn(cfgs, indices)

        def client_fn(context):
            client = inner(context)
            if int(context.node_config["partition-id"]) != BAD:
                return client
            honest_fit = client.fit

            def fit(ins):
                if int(ins.config["server_round"]) == FAULT_ROUND:
                    if mode == "raise":
                        raise RuntimeError("injected failure")
                    if mode == "exit":
                        os._exit(1)
                    time.sleep(150)  # past client_timeout; the simulation waits for it to end
                return honest_fit(ins)

            client.fit = fit
            return client

        return client_fn

    return make


def config(tmp_path, **extra):
    return from_dict(
        {
            "name": "faults",
            "rounds": 3,
            "output_dir": str(tmp_path),
            "data": {"dataset": "digits", "num_clients": 4, "partition": {"kind": "iid"}},
            "model": {"name": "mlp"},
            **extra,
        }
    )


@pytest.mark.parametrize("mode", ["raise", "exit", "hang"])
def test_round_goes_on_without_the_failed_client(tmp_path, monkeypatch, mode):
    monkeypatch.setattr(simulation, "make_cell_client_fn", faulty_federation(mode))
    # the timeout counts from when the round sends, start-up and queueing included
    cfg = config(tmp_path, client_timeout=120.0 if mode == "hang" else None)
    run_dir = simulation.run_experiment(cfg, progress=False)
    df = load_results(run_dir).set_index("round")
    assert list(df.index) == [0, 1, 2, 3]
    assert df.loc[FAULT_ROUND, "num_failures"] == 1
    assert df.loc[FAULT_ROUND, "participants"] == [0, 1, 2]
    assert df.loc[1, "num_failures"] == 0 and df.loc[1, "participants"] == [0, 1, 2, 3]
    if mode == "raise":
        assert "injected failure" in df.loc[FAULT_ROUND, "failures"][0]
    assert read_status(run_dir)["status"] == "completed"


def test_too_few_clients_ends_the_run_with_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(simulation, "make_cell_client_fn", faulty_federation("raise"))
    with pytest.raises(TooFewClientsError, match="round 2: 3 client\\(s\\) replied, 1 failed"):
        simulation.run_experiment(config(tmp_path, min_fit_clients=4), progress=False)
    (run_dir,) = tmp_path.iterdir()
    status = read_status(run_dir)
    assert (status["status"], status["rounds_completed"]) == ("failed", 1)
    assert "min_fit_clients needs 4" in status["message"]
