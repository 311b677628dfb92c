"""A simulation attached through ``RAY_ADDRESS`` to a two-node Ray cluster runs clients on both.

The cluster (a head and one worker node, one CPU each, on this machine) is
started with ``ray.cluster_utils.Cluster``, whose ``shutdown`` stops exactly
the processes it started. With ``client_num_cpus: 1`` Flower's actor pool
holds one actor per CPU, so the two client actors must land on different
nodes; the test reads their node ids from Ray's actor table afterwards.
"""

import json
import shutil
import tempfile

import pytest
import ray
from ray._private.state import actors
from ray.cluster_utils import Cluster

from flsec_flower.app.simulation import run_experiment
from flsec_flower.config import from_dict

pytestmark = pytest.mark.slow

NODE_ARGS = {"num_cpus": 1, "object_store_memory": 100 * 2**20}


@pytest.fixture
def two_node_cluster(monkeypatch):
    """A head and one worker node, each with one CPU; stopped afterwards.

    Its own short ``RAY_TMPDIR``: ``Cluster`` writes the head's address into
    ``<ray temp dir>/ray_current_cluster``, and a plain ``ray.init()`` of any
    other process on the machine (another test, a baseline run) would attach
    to it while it runs.
    """
    tmp = tempfile.mkdtemp(prefix="ray_")  # short: Ray's socket paths have a limit
    monkeypatch.setenv("RAY_TMPDIR", tmp)
    cluster = Cluster(
        initialize_head=True, head_node_args={**NODE_ARGS, "include_dashboard": False}
    )
    try:
        cluster.add_node(**NODE_ARGS)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        if ray.is_initialized():
            ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


def client_actor_nodes(address: str) -> set[str]:
    """Node ids of the Flower client actors the cluster ever ran."""
    ray.init(address=address, logging_level="ERROR")
    try:
        table = actors().values()
        return {a["Address"]["NodeID"] for a in table if "ClientAppActor" in a["ActorClassName"]}
    finally:
        ray.shutdown()


def test_simulation_through_ray_address_uses_both_nodes(tmp_path, monkeypatch, two_node_cluster):
    monkeypatch.setenv("RAY_ADDRESS", two_node_cluster.address)
    cfg = from_dict(
        {
            "name": "multinode",
            "rounds": 2,
            "output_dir": str(tmp_path),
            "data": {"dataset": "digits", "num_clients": 4, "partition": {"kind": "iid"}},
            "model": {"name": "logreg"},
            "training": {"local_steps": 1, "batch_size": 32, "lr": 0.1},
            "strategy": {"name": "fedavg", "device": "cpu"},
            "resources": {"client_num_cpus": 1.0},
        }
    )
    run_dir = run_experiment(cfg, progress=False)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert lines[-1]["round"] == 2
    nodes = {n["NodeID"] for n in ray_nodes(two_node_cluster)}
    assert len(nodes) == 2
    assert client_actor_nodes(two_node_cluster.address) == nodes


def ray_nodes(cluster: Cluster) -> list[dict]:
    """The cluster's live nodes as ``ray.nodes()`` lists them."""
    ray.init(address=cluster.address, logging_level="ERROR")
    try:
        return [n for n in ray.nodes() if n["Alive"]]
    finally:
        ray.shutdown()
