"""An attacking ``NumPyClient`` built from plain arguments, for outside Flower apps.

The simulation's attack clients read the project's experiment config; an
outside app has a model, its data and the attack's own parameters. This
client needs nothing else: it trains with plain SGD, knows the round from
the fit config (``server_round`` or Flower's ``server-round``) or counts its
fit calls (:class:`~clients.schedule.RoundClock`), and refuses what it
cannot do instead of answering as an honest client.
"""

from __future__ import annotations

import math

import torch
from flwr.client import NumPyClient
from flwr.common import Config, NDArrays, Scalar
from torch import nn

from clients.attack import ACTIVE_TAG
from clients.model_poisoning import UpdateAttack, check_number, update_is_zero
from clients.poisoned_data import DataPoisoning
from clients.schedule import RoundClock, Schedule
from flsec_flower.config import TrainingConfig
from flsec_flower.models import get_weights, set_weights
from flsec_flower.seeds import numpy_rng, round_generator
from flsec_flower.training import train_local
from flsec_flower.wire import TRAIN_LOSS


class StandaloneAttackClient(NumPyClient):
    """Train on (possibly poisoned) data, then forge the update, in the scheduled rounds.

    In an active round the client trains the global model on
    ``data_attack.poison(x, y)`` (or on ``(x, y)``) with SGD, then returns
    ``update_attack.forge(G, X)`` (or ``X``); outside the schedule it trains
    honestly on ``(x, y)``. Give at least one of the two attacks.

    Parameters
    ----------
    model : torch.nn.Module
        The model (its weights are overwritten by every fit).
    x, y : torch.Tensor
        The client's training data.
    update_attack : UpdateAttack, optional
        A model-poisoning attack, e.g. ``SignFlip()`` or ``Scaling(gamma=10)``.
    data_attack : DataPoisoning, optional
        A data-poisoning attack, e.g. ``LabelFlip(num_classes=10)``.
    schedule : Schedule, optional
        Active rounds (every round by default).
    require_round : bool
        Refuse fit configs without a round key (use it when the schedule
        names server rounds and the client is not sampled every round: a count
        of fit calls is then the number of participations).
    lr, epochs, batch_size : float, int, int
        Local SGD settings.
    seed : int
        Seed of the batch order, the poisoning and the attack's randomness.

    Raises
    ------
    ValueError
        Naming the argument: no attack, empty or mismatched data, bad settings.
    TypeError
        If an attack object lacks ``forge`` / ``poison`` (e.g. an omniscient
        attack, which forges on the server: see :mod:`clients.mods`).
    """

    def __init__(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        *,
        update_attack: UpdateAttack | None = None,
        data_attack: DataPoisoning | None = None,
        schedule: Schedule | None = None,
        require_round: bool = False,
        lr: float = 0.05,
        epochs: int = 1,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        if update_attack is None and data_attack is None:
            raise ValueError(
                "update_attack, data_attack: give at least one; without an attack the "
                "client would be honest"
            )
        if update_attack is not None and not callable(getattr(update_attack, "forge", None)):
            raise TypeError(
                f"update_attack: {update_attack!r} has no forge(global, trained, rng); omniscient "
                "attacks forge on the server (clients.omniscient.ColludingAdversary)"
            )
        if data_attack is not None and not callable(getattr(data_attack, "poison", None)):
            raise TypeError(f"data_attack: {data_attack!r} has no poison(x, y, generator)")
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"x, y: need the same non-zero length, got {len(x)} and {len(y)}")
        check_number("lr", lr, above=0)
        if not (isinstance(epochs, int) and epochs >= 1):
            raise ValueError(f"epochs: got {epochs!r}, must be an integer >= 1")
        if not (isinstance(batch_size, int) and batch_size >= 1):
            raise ValueError(f"batch_size: got {batch_size!r}, must be an integer >= 1")
        self.model = model
        self.x, self.y = x, y
        self.update_attack = update_attack
        self.data_attack = data_attack
        self.schedule = Schedule() if schedule is None else schedule
        self.clock = RoundClock(require_config=require_round)
        self.training = TrainingConfig(
            lr=lr, local_epochs=epochs, batch_size=batch_size, device="cpu"
        )
        self.seed = seed

    def get_parameters(self, config: Config) -> NDArrays:
        """The current local model."""
        return get_weights(self.model)

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Train from the global model and return the (forged) result.

        Raises
        ------
        ValueError
            If ``parameters`` do not fit the model.
        RuntimeError
            If an active update attack gets a zero honest update (it would
            send an honest-looking zero), or the config names no round
            while ``require_round``.
        """
        server_round = self.clock.tick(config)
        try:
            set_weights(self.model, parameters)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"parameters: do not fit the client's model: {err}") from err
        active = self.schedule.active(server_round)
        x, y = self.x, self.y
        if active and self.data_attack is not None:
            gen = torch.Generator().manual_seed(self.seed)
            x, y = self.data_attack.poison(x, y, gen)
        skip = active and self.update_attack is not None and not self.update_attack.needs_training
        loss = math.nan
        if not skip:
            gen = round_generator(self.seed, server_round)
            loss = train_local(self.model, x, y, self.training, gen)
        trained = get_weights(self.model)
        if active and self.update_attack is not None:
            if self.update_attack.needs_training and update_is_zero(parameters, trained):
                raise RuntimeError(
                    f"round {server_round}: training left the global model unchanged, so "
                    f"{type(self.update_attack).__name__} would send a zero update"
                )
            rng = numpy_rng(self.seed, server_round)
            trained = self.update_attack.forge(parameters, trained, rng)
        metrics: dict[str, Scalar] = {TRAIN_LOSS: float(loss), ACTIVE_TAG: active}
        return trained, len(y), metrics
