"""What server and clients share: the experiment description, the data, the model."""

from __future__ import annotations

from flsec_flower.config import ExperimentConfig, from_dict

SEED = 0


def experiment(num_partitions: int, attacker: int) -> ExperimentConfig:
    """The federation: digits split IID over ``num_partitions`` nodes, ``attacker`` flips signs.

    Parameters
    ----------
    num_partitions : int
        SuperNodes in the federation (their ``num-partitions`` node config).
    attacker : int
        Partition id of the sign-flipping SuperNode.
    """
    return from_dict(
        {
            "seed": SEED,
            "data": {
                "dataset": "digits",
                "num_clients": num_partitions,
                "partition": {"kind": "iid"},
            },
            "model": {"name": "mlp"},
            "training": {"local_epochs": 1, "lr": 0.05, "device": "cpu"},
            "attack": {"name": "sign_flip", "malicious_ids": [attacker]},
        }
    )
