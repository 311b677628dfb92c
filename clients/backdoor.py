"""One backdoor client, composed: backdoor data, the attacker's training, an update transform.

Every backdoor attack of the registry (pixel trojan, semantic backdoor, naive
poisoning, model replacement) is a :class:`BackdoorClient` whose class names
its parts (``backdoor_type``, ``training_type``, ``update_type``), each a
frozen dataclass whose fields are its parameters (declared once: the
registry, the config validation and ``flsec list`` read them through
``params_type``):

- the backdoor data (:class:`BackdoorParams`): a pixel trigger
  (:class:`clients.pixel_trojan.PixelBackdoor`) or semantic images
  (:class:`clients.semantic_backdoor.SemanticBackdoorParams`); bound to the
  client's partition, it gives a poisoned view of the data (a
  :class:`~clients.poisoned_data.DataPoisoning` transform, usable with
  :class:`~clients.poisoned_data.PoisonedDataset`) or a per-batch mixer;
- optionally the attacker's own learning rate and epochs (:class:`PoisonTraining`);
- optionally an update transform (:class:`BoostedUpdate`, e.g. model
  replacement's scaling), which may also shape the training
  (constrain-and-scale's anomaly loss).

The attacks compose these parts; none inherits another attack.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from flwr.common import NDArrays, Scalar
from torch import nn

from clients.attack import AttackClient, build_part, compose_params
from flsec_flower.config import ExperimentConfig, TrainingConfig, attacker_training
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed
from flsec_flower.seeds import BatchStream
from flsec_flower.training import BatchTransform, ExtraLoss, for_round, train_local
from flsec_flower.wire import MODEL_REPLACEMENT_GAMMA


class BackdoorData(Protocol):
    """A backdoor bound to one client's partition."""

    def training_data(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The poisoned view of ``(x, y)`` trained on while active (unchanged in batch mode)."""
        ...

    def batch_transform(self, server_round: int) -> BatchTransform | None:
        """The per-batch backdoor mixer of ``server_round``, or ``None`` (whole-view mode)."""
        ...


class BackdoorParams(Protocol):
    """The parameters of a backdoor's data, and what the server derives from them."""

    def bind(self, env: ClientEnv) -> BackdoorData:
        """Check the parameters against the client's data and bind them to it."""
        ...

    def server_metric(self, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric:
        """The server's ``backdoor_accuracy`` metric."""
        ...

    def reserved_indices(self, cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
        """Training examples only the attacker holds (``None``: none)."""
        ...


class BoostedUpdate(Protocol):
    """An update transform of a backdoor attacker, which may shape its training too."""

    def for_run(self, cfg: ExperimentConfig) -> BoostedUpdate:
        """The transform with its run-dependent defaults resolved (checked here)."""
        ...

    def boost(self, global_weights: NDArrays, trained: NDArrays) -> float:
        """The boost of this update (reported as the fit metric ``gamma``)."""
        ...

    def forge(
        self, global_weights: NDArrays, trained: NDArrays, rng: np.random.Generator | None
    ) -> NDArrays:
        """The weights sent for the trained model ``trained``."""
        ...

    def shape_training(
        self,
        cfg: TrainingConfig,
        model: nn.Module,
        clean_update: Callable[[], list[torch.Tensor]],
    ) -> tuple[TrainingConfig, ExtraLoss | None]:
        """The attacker's training settings and extra loss (``cfg`` and ``None``: unchanged)."""
        ...


@dataclass(frozen=True)
class PoisonTraining:
    """The backdoor attacker's local training: its own learning rate and epochs.

    Bagdasaryan et al. (AISTATS 2020) train the attacker's model with their
    own learning rate and number of local epochs.

    Parameters
    ----------
    poison_lr : float, optional
        Learning rate of the poisoned training; default ``training.lr``
        (of ``attack.training`` over ``training``).
    poison_epochs : int, optional
        Local epochs of the poisoned training; default ``training.local_epochs``.

    Examples
    --------
    >>> PoisonTraining(poison_lr=0.05).config(ExperimentConfig()).lr
    0.05
    """

    poison_lr: float | None = None
    poison_epochs: int | None = None

    def __post_init__(self) -> None:
        """Check the fields."""
        lr = self.poison_lr
        if lr is not None and not (math.isfinite(lr) and lr > 0):
            raise ValueError(f"poison_lr: got {lr!r}, must be a finite number > 0")
        if self.poison_epochs is not None and not self.poison_epochs >= 1:
            raise ValueError(f"poison_epochs: got {self.poison_epochs!r}, must be >= 1")

    def config(self, cfg: ExperimentConfig) -> TrainingConfig:
        """The attacker's training settings (``attack.training``) with ``poison_lr``."""
        training = attacker_training(cfg)
        if self.poison_lr is None:
            return training
        return dataclasses.replace(training, lr=self.poison_lr)


class BackdoorClient(AttackClient):
    """A backdoor attacker composed of its parts (see the module docstring).

    While active the client trains on the backdoor data (whole poisoned view
    or per-batch mixing) with :class:`PoisonTraining`'s settings when it has
    them (``attack.training`` over ``training`` otherwise), shaped by the
    update transform, and sends the transform's ``forge`` of the result (its
    boost as the fit metric ``gamma``). Outside the schedule it is honest.

    A subclass sets ``backdoor_type`` (a :class:`BackdoorParams` dataclass)
    and optionally ``training_type = PoisonTraining`` and ``update_type`` (a
    :class:`BoostedUpdate` dataclass); ``params_type`` is composed from them
    when the subclass is defined (update, training, backdoor fields, in
    that order).

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    **params
        The fields of the components.
    """

    backdoor_type: ClassVar[type]
    """The backdoor data's parameter dataclass (a :class:`BackdoorParams`)."""

    training_type: ClassVar[type[PoisonTraining] | None] = None
    """:class:`PoisonTraining` when the attacker has its own learning rate and epochs."""

    update_type: ClassVar[type | None] = None
    """The update transform's parameter dataclass (a :class:`BoostedUpdate`), if any."""

    params_type: ClassVar[type]
    """All parameters (:func:`~clients.attack.compose_params` of the parts), per subclass."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Compose the subclass's ``params_type`` from its parts."""
        super().__init_subclass__(**kwargs)
        cls.params_type = compose_params(f"{cls.__name__}Params", cls.part_types())

    @classmethod
    def part_types(cls) -> tuple[type, ...]:
        """The parts' dataclasses: update transform, training, backdoor (those present)."""
        types = (cls.update_type, cls.training_type, cls.backdoor_type)
        return tuple(t for t in types if t is not None)

    def __init__(self, env: ClientEnv, model: nn.Module | None = None, **params: Any) -> None:
        super().__init__(env, model)
        values = self.params_type(**params)
        self.backdoor: BackdoorData = build_part(self.backdoor_type, values).bind(env)
        self.poison_training = (
            PoisonTraining()
            if self.training_type is None
            else build_part(self.training_type, values)
        )
        self.update: BoostedUpdate | None = (
            None
            if self.update_type is None
            else build_part(self.update_type, values).for_run(env.cfg)
        )
        self.last_gamma: float | None = None

    @classmethod
    def backdoor_params(cls, cfg: ExperimentConfig) -> BackdoorParams:
        """The backdoor data's parameters of the run (``attack.params`` over the defaults)."""
        backdoor: BackdoorParams = build_part(
            cls.backdoor_type, cls.params_type(**cls.attack_params(cfg))
        )
        return backdoor

    def training_data(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """While active: the backdoor's poisoned view of the partition."""
        x, y = super().training_data(server_round)
        if not self.active(server_round):
            return x, y
        return self.backdoor.training_data(x, y)

    def batch_transform(self, server_round: int) -> BatchTransform | None:
        """While active: the backdoor's per-batch mixer (``None`` in whole-view mode)."""
        if not self.active(server_round):
            return None
        return self.backdoor.batch_transform(server_round)

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """While active: the attacker's settings and epochs, shaped by the update transform."""
        if not self.active(server_round):
            return super().train(x, y, server_round)
        training = self.poison_training
        cfg = training.config(self.env.cfg)
        extra: ExtraLoss | None = None
        if self.update is not None:
            cfg, extra = self.update.shape_training(
                cfg, self.model, lambda: self._clean_update(server_round)
            )
        return self.train_with(x, y, server_round, cfg, extra, training.poison_epochs)

    def _clean_update(self, server_round: int) -> list[torch.Tensor]:
        """The attacker's honest update from the current model; the model is restored."""
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        before = [p.detach().clone() for p in self.model.parameters()]
        gen = torch.Generator().manual_seed(
            client_seed(self.env.cfg, self.partition_id, server_round) + BatchStream.REPLACEMENT
        )
        honest = for_round(self.env.cfg.training, max(1, server_round))
        train_local(self.model, self.env.x, self.env.y, honest, gen)
        update = [p.detach() - b for p, b in zip(self.model.parameters(), before, strict=True)]
        self.model.load_state_dict(state)
        return update

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """While active with an update transform: its ``forge``; else the trained model."""
        if self.update is None or not self.active(server_round):
            self.last_gamma = None
            return trained
        self.last_gamma = self.update.boost(global_weights, trained)
        return self.update.forge(global_weights, trained, None)

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        """The attack tags, and the boost ``gamma`` when the update was transformed."""
        metrics = super().fit_metrics(server_round)
        if self.last_gamma is not None:
            metrics[MODEL_REPLACEMENT_GAMMA] = self.last_gamma
        return metrics

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """The backdoor's ``backdoor_accuracy``."""
        return cls.backdoor_params(cfg).server_metric(cfg, dataset)

    @classmethod
    def reserved_indices(cls, cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
        """The training examples only the attacker holds (semantic images)."""
        return cls.backdoor_params(cfg).reserved_indices(cfg, dataset)
