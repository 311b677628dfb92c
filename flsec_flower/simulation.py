"""Run an experiment on Flower's Simulation Engine (Ray backend)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from flwr.client import ClientApp
from flwr.common import Context
from flwr.common.logger import FLOWER_LOGGER
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.simulation import run_simulation

from flsec_flower import registry
from flsec_flower.client_app import make_cell_client_fn
from flsec_flower.config import ConfigError, ExperimentConfig
from flsec_flower.experiment import (
    client_env,
    client_indices,
    experiment_dataset,
    malicious_ids,
)
from flsec_flower.results import RunRecorder, new_run_dir
from flsec_flower.server_app import SequentialServer


def backend_config(cfg: ExperimentConfig) -> dict:
    """Ray backend settings: client CPUs and (fractional) GPUs; ``RAY_ADDRESS`` honoured."""
    init_args: dict = {"logging_level": logging.ERROR, "configure_logging": True}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        init_args["address"] = address
    return {
        "client_resources": {
            "num_cpus": cfg.resources.client_num_cpus,
            "num_gpus": cfg.resources.client_num_gpus,
        },
        "init_args": init_args,
    }


def validate(cfg: ExperimentConfig) -> None:
    """Surface config errors (names and parameters) before Ray starts.

    Builds the strategy once without Flower and one attacking client, so bad
    names and parameter values raise :class:`~flsec_flower.config.ConfigError`
    here rather than failing every client inside the simulation.
    """
    registry.validate_names(cfg.strategy, cfg.attack.name if cfg.attack else None)
    registry.build_strategy(cfg.strategy, device="cpu", seed=cfg.seed)
    attackers = sorted(malicious_ids(cfg))
    if attackers:
        registry.build_client(client_env(cfg, attackers[0]), malicious=True)


def _shared_federation(cfgs: list[ExperimentConfig]) -> None:
    first = cfgs[0]
    for cfg in cfgs[1:]:
        if cfg.data.num_clients != first.data.num_clients or cfg.resources != first.resources:
            raise ConfigError(
                f"{cfg.name}: experiments run together must share data.num_clients and "
                f"resources ({first.name} has {first.data.num_clients} clients, "
                f"{first.resources}; {cfg.name} has {cfg.data.num_clients}, {cfg.resources})"
            )


def run_experiments(
    cfgs: list[ExperimentConfig],
    progress: bool = True,
    verbose: bool = False,
    on_round: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Run experiments one after another in one Flower + Ray simulation.

    Ray and the client actors start once; each experiment gets its own
    strategy, global model and run directory (see
    :class:`~flsec_flower.server_app.SequentialServer`). The experiments must
    share ``data.num_clients`` and ``resources``. ``on_round(i, r)``, when
    given, is called after round ``r`` of experiment ``cfgs[i]`` is recorded.

    Raises
    ------
    ConfigError
        If a config is invalid or the experiments cannot share a federation.
    RuntimeError
        If the simulation ended before every experiment's last round.
    """
    if not cfgs:
        return []
    _shared_federation(cfgs)
    for cfg in cfgs:
        validate(cfg)
    indices = [client_indices(cfg, experiment_dataset(cfg)) for cfg in cfgs]
    runs = [
        (
            cfg,
            RunRecorder(
                new_run_dir(cfg),
                cfg,
                malicious_ids(cfg),
                progress,
                on_record=None if on_round is None else partial(on_round, i),
            ),
        )
        for i, cfg in enumerate(cfgs)
    ]

    def server_fn(context: Context) -> ServerAppComponents:
        total = sum(cfg.rounds for cfg in cfgs)
        return ServerAppComponents(server=SequentialServer(runs), config=ServerConfig(total))

    level = FLOWER_LOGGER.level
    if not verbose:
        FLOWER_LOGGER.setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        run_simulation(
            server_app=ServerApp(server_fn=server_fn),
            client_app=ClientApp(client_fn=make_cell_client_fn(cfgs, indices)),
            num_supernodes=cfgs[0].data.num_clients,
            backend_config=backend_config(cfgs[0]),
            verbose_logging=verbose,
        )
    finally:
        FLOWER_LOGGER.setLevel(level)
    for cfg, recorder in runs:
        if not recorder.finished:
            raise RuntimeError(
                f"{cfg.name}: the simulation stopped before round {cfg.rounds}; rounds "
                f"recorded so far are in {recorder.run_dir / 'metrics.jsonl'}"
            )
    return [recorder.run_dir for _, recorder in runs]


def run_experiment(cfg: ExperimentConfig, progress: bool = True, verbose: bool = False) -> Path:
    """Run one experiment through Flower and Ray; return its run directory."""
    return run_experiments([cfg], progress, verbose)[0]
