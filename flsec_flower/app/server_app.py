"""The Flower ServerApp: strategy, evaluation and results built from the config.

``app`` is the component ``flwr run`` loads (see ``[tool.flwr.app.components]``);
its config comes from the run config (``[tool.flwr.app.config]`` plus
``--run-config`` overrides). :func:`build_server` is shared with the
``flsec`` runner, which passes the config directly.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
import timeit
from typing import Any

import numpy as np
import torch
from flwr.common import Context, ndarrays_to_parameters
from flwr.server import History, Server, ServerApp, ServerAppComponents, ServerConfig
from flwr.server.client_manager import SimpleClientManager

from flsec_flower.app import errors as app_errors
from flsec_flower.app import registry
from flsec_flower.config import ExperimentConfig, from_run_config
from flsec_flower.evaluation import CentralEvaluator
from flsec_flower.experiment import (
    client_indices,
    experiment_dataset,
    malicious_ids,
    participation_schedule,
)
from flsec_flower.models import build_model, get_weights, set_weights
from flsec_flower.params import ParamLayout, resolve_device
from flsec_flower.pretrain import pretrained_weights
from flsec_flower.results import RunRecorder, new_run_dir
from flsec_flower.seeds import Stream, numpy_rng, trainer_generator
from flsec_flower.training import evaluate as evaluate_model
from flsec_flower.training import for_round, lr_at, resolve_batch_size, train_local
from flsec_flower.wire import CELL, CHECKPOINT_DIR, SERVER_ROUND
from strategies import RobustStrategy
from strategies.base import rule_chain, tensors_to

REGISTRATION_TIMEOUT = 120.0
"""Seconds a round waits for every SuperNode of the federation to connect."""


class ServerSideTrainer:
    """The honest clients' local procedure, run on the server (DiverseFL, FLTrust).

    Implements :class:`flsec_flower.aggregation.LocalTrainer`: trains a copy
    of the global model with the run's training settings and returns the
    update as a flat vector on the global vector's device.

    Parameters
    ----------
    cfg : ExperimentConfig
        The experiment (model, training settings, seed).
    layout : ParamLayout
        Layout of the model's arrays.
    """

    def __init__(self, cfg: ExperimentConfig, layout: ParamLayout) -> None:
        self.cfg = cfg
        self.layout = layout
        self.device = resolve_device(cfg.training.device)
        self.calls = 0

    @functools.cached_property
    def model(self) -> torch.nn.Module:
        """The model trained on the server, built at the first call (most rules never train)."""
        ds = experiment_dataset(self.cfg)
        model = build_model(self.cfg.model.name, ds.input_shape, ds.num_classes, self.cfg.seed)
        return model.to(self.device)

    def __call__(
        self,
        global_flat: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int | None = None,
        server_round: int = 1,
        reference_size: int | None = None,
    ) -> torch.Tensor:
        """Train from ``global_flat`` on ``(x, y)``; return ``x_trained - x_global``.

        The regime is the honest clients': ``training``'s optimiser, local
        epochs or steps, the learning rate of ``server_round``, and the
        batch size, a fraction of which is taken of ``reference_size``
        examples (the local set of the client imitated; default ``len(x)``).
        DiverseFL's guide on a sample smaller than the client's batch is
        thus one step on the whole sample, as its eq. 6.
        """
        set_weights(self.model, self.layout.unflatten(global_flat))
        self.calls += 1
        gen = trainer_generator(self.cfg.seed, self.calls)
        x, y = x.to(self.device), y.to(self.device)
        cfg = for_round(self.cfg.training, max(1, server_round))
        size = len(x) if reference_size is None else reference_size
        cfg = dataclasses.replace(cfg, batch_size=resolve_batch_size(cfg.batch_size, size))
        train_local(self.model, x, y, cfg, gen, max_steps=steps)
        return self.layout.flatten(get_weights(self.model), global_flat.device) - global_flat

    def evaluate(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy loss and error rate of the model ``flat`` on ``(x, y)``."""
        set_weights(self.model, self.layout.unflatten(flat))
        num_classes = experiment_dataset(self.cfg).num_classes
        result = evaluate_model(self.model, x.to(self.device), y.to(self.device), num_classes)
        return result.loss, 1.0 - result.accuracy

    def steps_for(self, num_examples: int) -> int:
        """Steps of a client with ``num_examples``: ``local_steps``, or epochs times batches.

        ``local_epochs * ceil(num_examples / b)`` with ``b`` the resolved
        batch size (:func:`~flsec_flower.training.resolve_batch_size`).
        """
        t = self.cfg.training
        if t.local_steps is not None:
            return t.local_steps
        batch = resolve_batch_size(t.batch_size, num_examples)
        return t.local_epochs * max(1, math.ceil(num_examples / batch))


def build_strategy(
    cfg: ExperimentConfig, recorder: RunRecorder | None, cell: int | None = None
) -> RobustStrategy:
    """Build the configured strategy with evaluation, adversary, trainer and recorder.

    ``cell`` numbers the experiment when several share one federation
    (:class:`SequentialServer`); it travels in every fit and properties
    config so each client acts as that experiment's client.
    """
    dataset = experiment_dataset(cfg)
    device = resolve_device(cfg.training.device)
    eval_model = build_model(
        cfg.model.name, dataset.input_shape, dataset.num_classes, cfg.seed, cfg.model.init
    )
    pretrained = pretrained_weights(cfg, dataset, client_indices(cfg, dataset))
    init = get_weights(eval_model) if pretrained is None else pretrained
    attack_cls = registry.attack_class(cfg.attack.name) if cfg.attack else None
    extra = []
    if attack_cls is not None:
        metric = attack_cls.server_metrics(cfg, dataset)
        if metric is not None:
            extra.append(metric)
    evaluator = CentralEvaluator(cfg, dataset, eval_model, device, extra)
    k, total = cfg.sampled_clients, cfg.data.num_clients
    cell_config: dict[str, Any] = {} if cell is None else {CELL: cell}
    fit_config = dict(cell_config)
    if recorder is not None:
        fit_config[CHECKPOINT_DIR] = str(recorder.run_dir.resolve())
    trainer = ServerSideTrainer(cfg, ParamLayout.of(init))
    adversary = attack_cls.server_adversary(cfg) if attack_cls is not None else None
    hooks: dict[str, registry.Hook] = {
        "local_trainer": lambda _: trainer,
        "adversary": lambda _: adversary,
        "root_data": lambda params: root_sample(cfg, params["root_size"]),
        "malicious_partition_ids": lambda _: malicious_ids(cfg),
    }
    if cfg.training.send == "gradient":
        gradient_lr = functools.partial(lr_at, cfg.training)
        hooks["gradient_lr"] = lambda _: gradient_lr
    strategy = registry.build_strategy(
        cfg.strategy,
        hooks,
        server_lr=cfg.server_lr,
        server_momentum=cfg.server_momentum,
        device=cfg.strategy.device,
        seed=cfg.seed,
        fraction_fit=k / total,
        min_fit_clients=k,
        min_available_clients=total,
        fraction_evaluate=0.0,
        min_evaluate_clients=0,
        evaluate_fn=evaluator,
        on_fit_config_fn=lambda server_round: {SERVER_ROUND: server_round, **fit_config},
        initial_parameters=ndarrays_to_parameters(init),
        min_results=cfg.min_results,
        registration_timeout=REGISTRATION_TIMEOUT,
        registration_hint="; the federation needs one SuperNode per client (data.num_clients)",
    )
    schedule = participation_schedule(cfg)
    for node in rule_chain(strategy):
        node.properties_config = cell_config
        node.participation = schedule
    if recorder is not None:
        strategy.round_listener = recorder.record
        recorder.checkpoint_state = functools.partial(checkpoint_state, strategy)
    return strategy


def checkpoint_state(strategy: RobustStrategy) -> dict:
    """What a resumed run restores besides the config: see :func:`restore`.

    The strategy's :meth:`~strategies.base.RobustStrategy.state_dict`, the
    state of the simulation adversary's forger (e.g. Mimic's running
    estimates) and the server-side trainer's call count (its seeds). Every
    other random choice derives from ``(seed, round)``.
    """
    trainer = strategy.local_trainer
    return {
        "strategy": strategy.state_dict(),
        "adversary": copy.deepcopy(_forger_state(strategy.adversary)),
        "trainer_calls": getattr(trainer, "calls", 0),
    }


def restore(strategy: RobustStrategy, state: dict) -> None:
    """Load a :func:`checkpoint_state` into a freshly built, initialised strategy."""
    strategy.load_state_dict(state["strategy"])
    forger = getattr(strategy.adversary, "forger", None)
    if state["adversary"] and forger is not None:
        vars(forger).update(tensors_to(state["adversary"], strategy.device))
    if isinstance(strategy.local_trainer, ServerSideTrainer):
        strategy.local_trainer.calls = int(state["trainer_calls"])


def _forger_state(adversary: object) -> dict:
    """The attributes of a stateful forger object (none for a plain function)."""
    forger = getattr(adversary, "forger", None)
    if forger is None or inspect.isfunction(forger) or not hasattr(forger, "__dict__"):
        return {}
    return dict(vars(forger))


def build_server(cfg: ExperimentConfig, recorder: RunRecorder | None) -> ServerAppComponents:
    """Build the legacy ``Server`` for one experiment (the ``flwr run`` path)."""
    server = Server(client_manager=SimpleClientManager(), strategy=build_strategy(cfg, recorder))
    server.set_max_workers(cfg.sampled_clients)
    config = ServerConfig(num_rounds=cfg.rounds, round_timeout=cfg.client_timeout)
    return ServerAppComponents(server=server, config=config)


class SequentialServer(Server):
    """Runs several experiments one after another on one federation.

    Ray and its client actors start once for all of them: experiment ``k``
    gets a fresh strategy (and global model) whose fit configs carry
    ``cell=k``, so every client acts as experiment ``k``'s client. The
    experiments must share the number of clients and the client resources.

    An experiment with a checkpoint (``flsec run --resume``) restores the
    strategy from it (:func:`restore`) and continues with the next round;
    the others start at round 0 (initial evaluation).

    Parameters
    ----------
    runs : list of (ExperimentConfig, RunRecorder)
        The experiments, in order, each with its recorder.
    checkpoints : list of (dict or None), optional
        Each experiment's checkpoint (:func:`checkpoint_state` plus
        ``"round"``), ``None`` to start afresh.
    """

    def __init__(
        self,
        runs: list[tuple[ExperimentConfig, RunRecorder]],
        checkpoints: list[dict | None] | None = None,
    ) -> None:
        self.runs = runs
        self.checkpoints = checkpoints or [None] * len(runs)
        self.partition_map: dict[str, int] = {}
        """Client id -> partition id, asked once and shared by every experiment's strategy."""
        super().__init__(
            client_manager=SimpleClientManager(), strategy=build_strategy(*runs[0], cell=0)
        )

    def fit(self, num_rounds: int, timeout: float | None) -> tuple[History, float]:
        """Fit each experiment for its own number of rounds; ``num_rounds`` is their sum.

        ``timeout`` is ignored: each experiment's ``client_timeout`` applies.
        """
        start = timeit.default_timer()
        for cell, (cfg, recorder) in enumerate(self.runs):
            if cell > 0:
                self.strategy = build_strategy(cfg, recorder, cell=cell)
            for node in rule_chain(self.strategy):
                node.share_partition_map(self.partition_map)
            self.set_max_workers(cfg.sampled_clients)
            recorder.start()
            self._fit_experiment(cfg, self.checkpoints[cell])
        return History(), timeit.default_timer() - start

    def _fit_experiment(self, cfg: ExperimentConfig, checkpoint: dict | None) -> None:
        strategy = self.strategy
        assert isinstance(strategy, RobustStrategy)
        self.parameters = self._get_initial_parameters(server_round=0, timeout=None)
        if checkpoint is None:
            first = 1
            strategy.evaluate(0, parameters=self.parameters)
        else:
            first = int(checkpoint["round"]) + 1
            restore(strategy, checkpoint)
            assert strategy.layout is not None and strategy.global_params is not None
            arrays = strategy.layout.unflatten(strategy.global_params)
            self.parameters = ndarrays_to_parameters(arrays)
        for server_round in range(first, cfg.rounds + 1):
            res = self.fit_round(server_round=server_round, timeout=cfg.client_timeout)
            if res is not None and res[0] is not None:
                self.parameters = res[0]
            strategy.evaluate(server_round, parameters=self.parameters)


def root_sample(cfg: ExperimentConfig, root_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The server's root dataset (FLTrust, Fang et al.): a seeded clean training sample.

    Cao et al. assume the server collected a small clean dataset from the
    task's distribution; here it is ``root_size`` examples (at most the
    training set) drawn from the training set with the run's seed.
    """
    dataset = experiment_dataset(cfg)
    size = min(int(root_size), len(dataset.y_train))
    rng = numpy_rng(cfg.seed, Stream.ROOT_DATA)
    idx = torch.as_tensor(np.sort(rng.choice(len(dataset.y_train), size, replace=False)))
    return dataset.x_train[idx], dataset.y_train[idx]


def _server_fn(context: Context) -> ServerAppComponents:
    """The server of ``flwr run``: the experiment comes from the run config.

    The config is validated as ``flsec run`` validates a YAML file (names,
    parameters, data files) before a run directory exists; a user error fails
    the run with one line in its log (:mod:`flsec_flower.app.errors`).
    """
    cfg = from_run_config(dict(context.run_config))
    registry.validate_experiment(cfg)
    run_dir = new_run_dir(cfg)
    print(f"flsec: writing results to {run_dir.resolve()}", flush=True)
    recorder = RunRecorder(run_dir, cfg, malicious_ids(cfg), progress=False)
    return build_server(cfg, recorder)


app_errors.install()
app = ServerApp(server_fn=_server_fn)
