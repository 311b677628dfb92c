"""Naive (data-only) backdoor poisoning: Bagdasaryan et al.'s baseline, without scaling."""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from clients.attack import AttackClient
from clients.pixel_trojan import PixelTrojanClient
from clients.semantic_backdoor import SemanticBackdoorClient
from flsec_flower.config import TrainingConfig, attacker_training
from flsec_flower.experiment import ClientEnv
from flsec_flower.training import ExtraLoss


class PoisonedTraining(AttackClient):
    """The backdoor attacker's local training: its own learning rate and epochs.

    Bagdasaryan et al. (AISTATS 2020) train the attacker's model with their
    own learning rate and number of local epochs. Combined with a backdoor
    client (:class:`~clients.pixel_trojan.PixelTrojanClient` or
    :class:`~clients.semantic_backdoor.SemanticBackdoorClient`), which
    supplies the poisoned data, the backdoor items mixed into each batch and
    the server's ``backdoor_accuracy``. Outside the schedule the client trains
    honestly.

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    poison_lr : float, optional
        Learning rate of the poisoned training; default ``training.lr``.
    poison_epochs : int, optional
        Local epochs of the poisoned training; default ``training.local_epochs``.
    **backdoor
        Parameters of the backdoor client.
    """

    def __init__(
        self,
        env: ClientEnv,
        model: nn.Module | None = None,
        *,
        poison_lr: float | None = None,
        poison_epochs: int | None = None,
        **backdoor: object,
    ) -> None:
        super().__init__(env, model, **backdoor)
        if poison_lr is not None and not (math.isfinite(poison_lr) and poison_lr > 0):
            raise ValueError(f"poison_lr: got {poison_lr!r}, must be a finite number > 0")
        if poison_epochs is not None and not poison_epochs >= 1:
            raise ValueError(f"poison_epochs: got {poison_epochs!r}, must be >= 1")
        self.poison_lr = poison_lr
        self.poison_epochs = poison_epochs

    def poison_config(self) -> TrainingConfig:
        """The attacker's training settings (``attack.training``) with ``poison_lr``."""
        cfg = attacker_training(self.env.cfg)
        return cfg if self.poison_lr is None else dataclasses.replace(cfg, lr=self.poison_lr)

    def train_poisoned(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        server_round: int,
        cfg: TrainingConfig,
        extra_loss: ExtraLoss | None = None,
    ) -> float:
        """Train on ``(x, y)`` with ``cfg``, the attacker's epochs and the backdoor batches."""
        return self.train_with(x, y, server_round, cfg, extra_loss, self.poison_epochs)

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """Honest training outside the schedule, the attacker's training inside it."""
        if not self.active(server_round):
            return super().train(x, y, server_round)
        return self.train_poisoned(x, y, server_round, self.poison_config())


class NaivePoisoningClient(PoisonedTraining, PixelTrojanClient):
    """Pixel-trigger backdoor by data poisoning alone: the baseline of Bagdasaryan et al.

    Bagdasaryan, Veit, Hua, Estrin & Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020, compare model replacement with an attacker that
    trains on its backdoor data and submits the result unscaled. This client
    is that attacker for a pixel trigger; the parameters are those of
    :class:`PoisonedTraining` and :class:`~clients.pixel_trojan.PixelTrojanClient`
    (e.g. ``items_per_batch: 20`` for the paper's batch mixing).
    """


class SemanticNaivePoisoningClient(PoisonedTraining, SemanticBackdoorClient):
    """Semantic backdoor by data poisoning alone: the baseline of Bagdasaryan et al.

    The parameters are those of :class:`PoisonedTraining` and
    :class:`~clients.semantic_backdoor.SemanticBackdoorClient`.
    """
