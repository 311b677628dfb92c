"""The small in-memory ``ClientEnv`` the attack tests build: no dataset on disk, one CPU."""

from __future__ import annotations

from typing import Any

import torch

from flsec_flower.config import from_dict
from flsec_flower.data import Dataset
from flsec_flower.experiment import ClientEnv


def toy_data(
    n: int = 40, size: int = 8, scale: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` uniform ``1 x size x size`` images times ``scale``, labels ``0, 1, .., 9, 0, ..``."""
    y = torch.arange(n) % 10
    x = torch.rand(n, 1, size, size, generator=torch.Generator().manual_seed(seed)) * scale
    return x, y


def toy_env(
    name: str,
    malicious_ids: list[int],
    params: dict[str, Any] | None = None,
    attack: dict[str, Any] | None = None,
    *,
    num_clients: int = 4,
    partition_id: int = 0,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
    dataset: Dataset | None = None,
) -> ClientEnv:
    """Partition ``partition_id`` of a logreg run attacked by ``name``.

    ``params`` are the attack's parameters, ``attack`` further keys of the
    attack block (``start_round``, ``training``...). The partition is
    ``data`` (default :func:`toy_data`); the dataset ``dataset``, by
    default the partition as both train and test set, 10 classes.
    """
    cfg = from_dict(
        {
            "data": {"num_clients": num_clients},
            "model": {"name": "logreg"},
            "training": {"batch_size": 8, "device": "cpu"},
            "attack": {
                "name": name,
                "malicious_ids": malicious_ids,
                "params": params or {},
                **(attack or {}),
            },
        }
    )
    x, y = toy_data() if data is None else data
    if dataset is None:
        dataset = Dataset("toy", x, y, x.clone(), y.clone(), num_classes=10)
    return ClientEnv(partition_id, x, y, dataset, cfg, torch.device("cpu"))
