"""Run an experiment on Flower's Simulation Engine (Ray backend)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

from flwr.client import ClientApp
from flwr.common import Context
from flwr.common.logger import FLOWER_LOGGER
from flwr.server import ServerApp, ServerAppComponents, ServerConfig
from flwr.simulation import run_simulation

from flsec_flower.app import registry
from flsec_flower.app.client_app import make_cell_client_fn
from flsec_flower.app.interrupts import handle_interrupts, ray_start_watchdog
from flsec_flower.app.server_app import SequentialServer
from flsec_flower.app.shared_indices import SharedIndices
from flsec_flower.checkpoint import load_checkpoint, read_status
from flsec_flower.config import ConfigError, ExperimentConfig, from_dict, read_yaml
from flsec_flower.experiment import (
    client_indices,
    experiment_dataset,
    malicious_ids,
)
from flsec_flower.results import CONFIG_FILE, RunRecorder, new_run_dir

ACTOR_MAX_RESTARTS = -1
"""Ray restarts a client actor whose process died (``os._exit``, OOM), without limit.

Flower's actor pool keeps a dead actor and would fail every later client
sent to it; restarted, only the client that was running fails (a failure
in that round's metrics)."""


def backend_config(cfg: ExperimentConfig) -> dict:
    """Ray backend settings: client CPUs and (fractional) GPUs, restart of dead actors.

    ``RAY_ADDRESS`` is honoured (attach to an existing cluster).
    """
    init_args: dict = {"logging_level": logging.ERROR, "configure_logging": True}
    address = os.environ.get("RAY_ADDRESS")
    if address:
        init_args["address"] = address
    return {
        "client_resources": {
            "num_cpus": cfg.resources.client_num_cpus,
            "num_gpus": cfg.resources.client_num_gpus,
            "max_restarts": ACTOR_MAX_RESTARTS,
        },
        "init_args": init_args,
    }


def start_ray(cfg: ExperimentConfig) -> None:
    """Start (or attach to) Ray as Flower's Ray backend would, unless it is up.

    Done before the simulation so the runner's signal handlers can be put
    back after ``ray.init`` replaces the SIGTERM one; Flower then finds Ray
    initialised and uses it (and shuts it down at the end). Attaching to an
    existing cluster (``RAY_ADDRESS``) prints one line with its address and
    resources (:func:`describe_cluster`).
    """
    import ray

    if ray.is_initialized():
        return
    parts = [*sys.path, os.environ.get("PYTHONPATH", "")]
    pythonpath = os.pathsep.join(p for p in parts if p)
    os.environ["PYTHONPATH"] = pythonpath  # the actors import this checkout
    init_args = {"include_dashboard": False, **backend_config(cfg)["init_args"]}
    info = ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init_args)
    if "address" in init_args:
        address = info.address_info.get("gcs_address") or init_args["address"]
        print(describe_cluster(address, ray.cluster_resources()))
    try:
        check_gpus(cfg, ray.cluster_resources())
    except ConfigError:
        ray.shutdown()
        raise


def check_gpus(cfg: ExperimentConfig, resources: dict[str, float]) -> None:
    """Refuse GPU clients on a Ray cluster without GPUs (Ray would wait for them forever).

    Raises
    ------
    ConfigError
        If ``resources.client_num_gpus`` exceeds the cluster's GPU count.
    """
    wanted, present = cfg.resources.client_num_gpus, resources.get("GPU", 0.0)
    if wanted > present:
        raise ConfigError(
            f"resources.client_num_gpus: got {wanted!r}, but the Ray cluster has "
            f"{present:g} GPUs; set it to 0 for CPU clients, or run on a machine or "
            "cluster (RAY_ADDRESS) with GPUs"
        )


def describe_cluster(address: str, resources: dict[str, float]) -> str:
    """One line naming the Ray cluster attached to and its CPUs, GPUs and memory."""
    memory = resources.get("memory", 0.0) / 2**30
    return (
        f"attached to Ray cluster at {address}: {resources.get('CPU', 0.0):g} CPUs, "
        f"{resources.get('GPU', 0.0):g} GPUs, {memory:.1f} GiB memory"
    )


def validate(cfg: ExperimentConfig) -> None:
    """Surface config errors (names and parameters) before Ray starts.

    Builds the strategy once without Flower, loads the dataset and builds one
    attacking client, so bad names and parameter values raise
    :class:`~flsec_flower.config.ConfigError`, and missing or corrupt data
    files ``FileNotFoundError`` or :class:`~flsec_flower.data.dataset.DataError`,
    here (before any run directory exists) rather than inside the simulation.
    A rule's ``f`` that rounds of ``clients_per_round`` updates cannot meet
    (under ``on_too_few: raise``) is a config error too.
    """
    registry.validate_experiment(cfg)


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
    :class:`~flsec_flower.app.server_app.SequentialServer`). The experiments must
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
    return _simulate(runs, [None] * len(runs), verbose)


def resume_experiment(run_dir: Path, progress: bool = True, verbose: bool = False) -> Path:
    """Continue a stopped run in ``run_dir`` from its last checkpointed round.

    The config is the run's ``config.yaml``; the strategy, the adversary's
    state and the trainer's seeds come from ``checkpoint.pt``; metrics lines
    of rounds after the checkpoint are dropped and recomputed. A run killed
    before its first checkpoint starts again from round 0.

    Raises
    ------
    ConfigError
        If ``run_dir`` is not a run directory or the run is already completed.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume: {run_dir} has no {CONFIG_FILE}: not a flsec run directory")
    status = read_status(run_dir)
    if status is not None and status.get("status") == "completed":
        raise ConfigError(f"--resume: {run_dir} is already completed")
    cfg = from_dict(read_yaml(run_dir / CONFIG_FILE))
    validate(cfg)
    checkpoint = load_checkpoint(run_dir)
    resume_round = -1 if checkpoint is None else int(checkpoint["round"])
    recorder = RunRecorder(run_dir, cfg, malicious_ids(cfg), progress, resume_round=resume_round)
    return _simulate([(cfg, recorder)], [checkpoint], verbose)[0]


def _simulate(
    runs: list[tuple[ExperimentConfig, RunRecorder]],
    checkpoints: list[dict | None],
    verbose: bool,
) -> list[Path]:
    """Run the simulation for ``runs``; mark unfinished runs failed on an error."""
    import ray

    cfgs = [cfg for cfg, _ in runs]
    indices = [client_indices(cfg, experiment_dataset(cfg)) for cfg in cfgs]

    def server_fn(context: Context) -> ServerAppComponents:
        total = sum(cfg.rounds for cfg in cfgs)
        server = SequentialServer(runs, checkpoints)
        return ServerAppComponents(server=server, config=ServerConfig(total))

    level = FLOWER_LOGGER.level
    if not verbose:
        FLOWER_LOGGER.setLevel(logging.ERROR)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    recorders = [recorder for _, recorder in runs]
    try:
        with ray_start_watchdog(recorders), handle_interrupts(recorders) as reinstall:
            start_ray(cfgs[0])
            reinstall()  # ray.init replaced the SIGTERM handler with its own
            shared = SharedIndices(ray.put(indices))
            run_simulation(
                server_app=ServerApp(server_fn=server_fn),
                client_app=ClientApp(client_fn=make_cell_client_fn(cfgs, shared)),
                num_supernodes=cfgs[0].data.num_clients,
                backend_config=backend_config(cfgs[0]),
                verbose_logging=verbose,
            )
    except BaseException as err:
        for recorder in recorders:
            if not recorder.finished:
                recorder.mark("failed", f"{type(err).__name__}: {err}")
        raise
    finally:
        FLOWER_LOGGER.setLevel(level)
    for cfg, recorder in runs:
        if not recorder.finished:
            message = (
                f"{cfg.name}: the simulation stopped before round {cfg.rounds}; rounds "
                f"recorded so far are in {recorder.run_dir / 'metrics.jsonl'}"
            )
            recorder.mark("failed", message)
            raise RuntimeError(message)
    return [recorder.run_dir for recorder in recorders]


def run_experiment(cfg: ExperimentConfig, progress: bool = True, verbose: bool = False) -> Path:
    """Run one experiment through Flower and Ray; return its run directory."""
    return run_experiments([cfg], progress, verbose)[0]
