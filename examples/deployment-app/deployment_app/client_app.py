"""ClientApp: the SuperNode whose ``partition-id`` is ``attacker-partition`` flips signs."""

from __future__ import annotations

from flwr.client import Client, ClientApp
from flwr.common import Context

import flsec_flower.app.registry  # noqa: F401  (client_env needs the attacks' data layouts)
from clients import HonestClient, SignFlipClient
from deployment_app.task import experiment
from flsec_flower.experiment import client_env


def client_fn(context: Context) -> Client:
    """Build this node's client from its node config and the run config."""
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    attacker = int(context.run_config["attacker-partition"])
    env = client_env(experiment(num_partitions, attacker), partition_id)
    client = SignFlipClient(env) if partition_id == attacker else HonestClient(env)
    return client.to_client()


app = ClientApp(client_fn=client_fn)
