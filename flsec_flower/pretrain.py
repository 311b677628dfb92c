"""Central pre-training of the initial global model (a cheap stand-in for many clean rounds).

Bagdasaryan et al. (AISTATS 2020) attack a global model that has converged
after thousands of clean federated rounds. ``model.pretrain_epochs: E``
starts a run from such a model without paying for the rounds: before round
1 the server trains the seeded initial model for ``E`` epochs on the union of
every client's partition (the federation's data; examples an attack keeps
from honest clients, such as semantic-backdoor images, are not in it) with
the run's ``training`` settings (optimiser, learning rate, batch size,
momentum, weight decay; ``local_steps`` is ignored). The result depends only
on the data, the seed, the model and those settings, so it is computed once
per process and shared by every run that agrees on them (the cells of one
baseline simulation).
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.models import build_model, get_weights
from flsec_flower.params import resolve_device
from flsec_flower.training import train_local

_CACHE: dict[str, list[np.ndarray]] = {}


def pooled_indices(partitions: list[np.ndarray]) -> np.ndarray:
    """The sorted union of the partitions' training indices.

    Examples
    --------
    >>> pooled_indices([np.array([3, 1]), np.array([1, 0])])
    array([0, 1, 3])
    """
    if not partitions:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate([np.asarray(p, dtype=np.int64) for p in partitions]))


def pretrained_weights(
    cfg: ExperimentConfig, dataset: Dataset, partitions: list[np.ndarray]
) -> list[np.ndarray] | None:
    """The initial global model after ``cfg.model.pretrain_epochs`` central epochs.

    Parameters
    ----------
    cfg : ExperimentConfig
        The run; ``model`` and ``training`` say what is trained and how.
    dataset : Dataset
        The run's dataset.
    partitions : list of numpy.ndarray
        Every client's training indices; their union is the pre-training set.

    Returns
    -------
    list of numpy.ndarray or None
        The weights, or ``None`` when ``pretrain_epochs`` is 0 (start from the
        seeded initial model).
    """
    epochs = cfg.model.pretrain_epochs
    if epochs == 0:
        return None
    pooled = pooled_indices(partitions)
    d, m = cfg.data, cfg.model
    digest = hashlib.sha256(pooled.tobytes()).hexdigest()
    key = repr((d.dataset, d.data_dir, cfg.seed, m, cfg.training, digest))
    if key not in _CACHE:
        device = resolve_device(cfg.training.device)
        model = build_model(m.name, dataset.input_shape, dataset.num_classes, cfg.seed, m.init)
        model.to(device)
        idx = torch.as_tensor(pooled)
        x, y = dataset.x_train[idx].to(device), dataset.y_train[idx].to(device)
        gen = torch.Generator().manual_seed(
            int(np.random.default_rng([cfg.seed, 0x9E7]).integers(2**62))
        )
        train_local(model, x, y, cfg.training, gen, epochs=epochs)
        _CACHE[key] = get_weights(model.cpu())
    return [w.copy() for w in _CACHE[key]]
