"""The Flower ClientApp: one honest or attacking client per partition."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from flwr.app import RecordDict
from flwr.client import Client, ClientApp, NumPyClient
from flwr.common import Config, Context, NDArrays, Scalar
from torch import nn

from clients import HonestClient
from flsec_flower.app import registry
from flsec_flower.cache import BoundedCache
from flsec_flower.client_state import ClientState
from flsec_flower.config import ExperimentConfig, from_run_config
from flsec_flower.experiment import (
    client_env,
    experiment_dataset,
    malicious_ids,
    preset_indices,
)
from flsec_flower.models import build_model
from flsec_flower.wire import CELL

_MODELS: BoundedCache[tuple, nn.Module] = BoundedCache("client_models", 8)
_CONFIGS: BoundedCache[tuple, ExperimentConfig] = BoundedCache("run_configs", 64)


def _model(cfg: ExperimentConfig) -> nn.Module:
    """One model object per process and architecture; clients overwrite its weights."""
    ds = experiment_dataset(cfg)
    key = (cfg.model.name, ds.input_shape, ds.num_classes, cfg.training.device)
    return _MODELS.get_or_build(
        key, lambda: build_model(cfg.model.name, ds.input_shape, ds.num_classes, cfg.seed)
    )


def experiment_client(
    cfg: ExperimentConfig, partition_id: int, state: ClientState | None = None
) -> HonestClient:
    """The client of ``partition_id`` in ``cfg``: honest, or the configured attack.

    ``state`` is the client's state across rounds (worker momentum), kept
    in its node's ``Context.state``.
    """
    env = client_env(cfg, partition_id)
    malicious = partition_id in malicious_ids(cfg)
    client = registry.build_client(env, malicious, model=_model(cfg))
    client.state = state
    return client


class CellClient(NumPyClient):
    """Acts, message by message, as the client of the experiment named by ``cell``.

    Used when several experiments share one federation
    (:class:`flsec_flower.app.server_app.SequentialServer`): every config the
    server sends carries the experiment's index ``cell``.

    Parameters
    ----------
    partition_id : int
        The node's partition.
    cfgs : list of ExperimentConfig
        The experiments, indexed by ``cell``.
    indices : sequence of list of numpy.ndarray
        Each experiment's partition indices, computed once by the driver (in a
        simulation a :class:`~flsec_flower.app.shared_indices.SharedIndices`).
    records : flwr.app.RecordDict, optional
        The node's ``Context.state``; each cell's client keeps its state
        there under its own keys (:mod:`flsec_flower.client_state`).
    """

    def __init__(
        self,
        partition_id: int,
        cfgs: list[ExperimentConfig],
        indices: Sequence[list[np.ndarray]],
        records: RecordDict | None = None,
    ) -> None:
        self.partition_id = partition_id
        self.cfgs = cfgs
        self.indices = indices
        self.records = RecordDict() if records is None else records

    def _client(self, config: Config) -> HonestClient:
        cell = int(config.get(CELL, 0))
        if not 0 <= cell < len(self.cfgs):
            raise ValueError(f"config names cell {cell}, but there are {len(self.cfgs)}")
        preset_indices(self.cfgs[cell], self.indices[cell])
        state = ClientState(self.records, cell, self.partition_id)
        return experiment_client(self.cfgs[cell], self.partition_id, state)

    def get_properties(self, config: Config) -> dict[str, Scalar]:
        """Answer as the cell's client."""
        return self._client(config).get_properties(config)

    def get_parameters(self, config: Config) -> NDArrays:
        """The cell's client's local model."""
        return self._client(config).get_parameters(config)

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Fit as the cell's client."""
        return self._client(config).fit(parameters, config)

    def evaluate(
        self, parameters: NDArrays, config: Config
    ) -> tuple[float, int, dict[str, Scalar]]:
        """Evaluate as the cell's client."""
        return self._client(config).evaluate(parameters, config)


def _partition_id(context: Context, num_clients: int) -> int:
    num_partitions = int(context.node_config.get("num-partitions", num_clients))
    if num_partitions != num_clients:
        raise ValueError(
            f"the federation has {num_partitions} nodes but data.num_clients is "
            f"{num_clients}: set num-supernodes to data.num_clients"
        )
    return int(context.node_config["partition-id"])


def make_cell_client_fn(
    cfgs: list[ExperimentConfig], indices: Sequence[list[np.ndarray]]
) -> Callable[[Context], Client]:
    """``client_fn`` of a federation shared by the experiments ``cfgs``.

    ``indices`` (each experiment's partition, computed by the caller) travel
    with the function, so Ray actors need not run the partitioners again; the
    function is pickled with every message, so a simulation passes a
    :class:`~flsec_flower.app.shared_indices.SharedIndices`, which pickles
    as an object reference.
    """

    def client_fn(context: Context) -> Client:
        partition_id = _partition_id(context, cfgs[0].data.num_clients)
        return CellClient(partition_id, cfgs, indices, context.state).to_client()

    return client_fn


def _client_fn(context: Context) -> Client:
    """``client_fn`` of ``flwr run``: the experiment comes from the run config."""
    cfg = _config_from(context)
    partition_id = _partition_id(context, cfg.data.num_clients)
    state = ClientState(context.state, 0, partition_id)
    return experiment_client(cfg, partition_id, state).to_client()


def _config_from(context: Context) -> ExperimentConfig:
    key = tuple(sorted(context.run_config.items()))
    return _CONFIGS.get_or_build(key, lambda: from_run_config(dict(context.run_config)))


app = ClientApp(client_fn=_client_fn)
