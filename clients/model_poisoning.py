r"""Model poisoning: an attack that rewrites the client's own update before it is sent.

An attack of this kind is a frozen dataclass whose fields are its parameters
(declared once: the registry, the config validation, ``flsec list``, the
``NumPyClient`` and the client mods all read them) with one method,

``forge(global_weights, trained, rng) -> weights``:

the update :math:`u = X - G` of the honestly trained model ``X`` from the
global model ``G`` is replaced by a forged :math:`\tilde u` and
:math:`G + \tilde u` is returned. :func:`forge_update` applies it to a
bare update; :class:`ModelPoisoningClient` (``NumPyClient``) and
:func:`clients.mods.attack_mod` (Message-API client mod) wrap the same object.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar, Protocol

import numpy as np
import torch
from flwr.common import NDArrays
from torch import nn

from clients.attack import AttackClient
from flsec_flower.experiment import ClientEnv, client_seed


class UpdateAttack(Protocol):
    """What every model-poisoning attack provides (see the module docstring)."""

    needs_training: ClassVar[bool]
    """Whether the forged update depends on the honestly trained model."""

    def forge(
        self, global_weights: NDArrays, trained: NDArrays, rng: np.random.Generator
    ) -> NDArrays:
        """Weights carrying the forged update, in the dtypes of ``global_weights``."""
        ...


def forge_update(
    attack: UpdateAttack, update: NDArrays, rng: np.random.Generator | None = None
) -> NDArrays:
    """The forged update for an honest ``update`` (``forge`` from a zero global model).

    Parameters
    ----------
    attack : UpdateAttack
        The attack.
    update : list of numpy.ndarray
        The honest update ``u = X - G``.
    rng : numpy.random.Generator, optional
        Randomness of the attack (Gaussian); a fresh unseeded one by default.

    Returns
    -------
    list of numpy.ndarray
        The forged update.

    Examples
    --------
    >>> from clients.sign_flip import SignFlip
    >>> forge_update(SignFlip(), [np.array([1.0, -2.0])])[0]
    array([-1.,  2.])
    """
    zeros = [np.zeros_like(u) for u in update]
    return attack.forge(zeros, update, np.random.default_rng() if rng is None else rng)


def update_is_zero(global_weights: NDArrays, trained: NDArrays) -> bool:
    """Whether ``trained`` equals ``global_weights`` everywhere (a zero update).

    Examples
    --------
    >>> update_is_zero([np.ones(2)], [np.ones(2)]), update_is_zero([np.ones(2)], [np.zeros(2)])
    (True, False)
    """
    return all(np.array_equal(g, x) for g, x in zip(global_weights, trained, strict=True))


def check_number(
    name: str, value: object, *, above: float | None = None, at_least: float | None = None
) -> None:
    """Raise ValueError naming ``name`` unless ``value`` is a finite number in range.

    Examples
    --------
    >>> check_number("scale", float("nan"), above=0)
    Traceback (most recent call last):
    ...
    ValueError: scale: got nan, must be a finite number > 0
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if above is not None:
        ok = ok and value > above  # type: ignore[operator]
        rule = f" > {above:g}"
    elif at_least is not None:
        ok = ok and value >= at_least  # type: ignore[operator]
        rule = f" >= {at_least:g}"
    else:
        rule = ""
    if not ok:
        raise ValueError(f"{name}: got {value!r}, must be a finite number{rule}")


def parameter_names(params_type: type) -> list[str]:
    """The parameter names of an attack's parameter dataclass, in declaration order."""
    return [f.name for f in dataclasses.fields(params_type)]


class ModelPoisoningClient(AttackClient):
    """``NumPyClient`` of a model-poisoning attack: ``params_type(**params).forge`` while active.

    A subclass names its attack's dataclass in ``params_type``; the
    constructor's keyword arguments are that dataclass's fields (validated by
    it). While active the client returns ``attack.forge(G, X, rng)`` with the
    noise seeded by the run's seed, the partition and the round; an attack
    whose update does not depend on training (``needs_training`` false) skips
    training while active (the fit reports a ``nan`` loss).

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    **params
        The fields of ``params_type``.
    """

    params_type: ClassVar[type]
    """The attack's parameter dataclass (an :class:`UpdateAttack`)."""

    def __init__(self, env: ClientEnv, model: nn.Module | None = None, **params: Any) -> None:
        super().__init__(env, model)
        self.attack: UpdateAttack = self.params_type(**params)

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """Train honestly unless active with an attack that ignores training (``nan`` loss)."""
        if self.active(server_round) and not self.attack.needs_training:
            return float("nan")
        return super().train(x, y, server_round)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """``attack.forge(G, X, rng)`` while active, else ``X``."""
        if not self.active(server_round):
            return trained
        rng = np.random.default_rng(client_seed(self.env.cfg, self.partition_id, server_round))
        return self.attack.forge(global_weights, trained, rng)
