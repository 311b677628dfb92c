"""Base of every attack: the schedule and the reply tag."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any, ClassVar

import torch
from flwr.common import Scalar
from torch import nn

from clients.honest import HonestClient
from flsec_flower.config import ExperimentConfig, TrainingConfig, attacker_training
from flsec_flower.experiment import ClientEnv, attack_round, malicious_ids
from flsec_flower.training import BatchTransform
from flsec_flower.wire import ATTACK_ACTIVE, MALICIOUS

ACTIVE_TAG = ATTACK_ACTIVE
"""Fit-metrics key: ``True`` when the attacker acted this round (the adversary hook reads it)."""


def attackers_per_round(cfg: ExperimentConfig) -> int:
    """Attackers expected among a round's sampled clients (at least 1).

    ``round(m * k / N)`` for ``m`` attackers, ``k`` clients per round and
    ``N`` clients: exact under full participation, the expectation otherwise.
    Colluding attackers that split one forged update divide by it.
    """
    m = len(malicious_ids(cfg))
    return max(1, round(m * cfg.sampled_clients / cfg.data.num_clients))


def backdoor_mixer(
    items_per_batch: int, draw: Callable[[int], torch.Tensor], target_class: int
) -> BatchTransform:
    """A batch transform that replaces each batch's first ``c`` items by backdoor items.

    Bagdasaryan et al. mix ``c`` backdoor inputs, labelled ``target_class``,
    into every mini-batch; ``draw(k)`` returns ``k`` such inputs.
    """

    def mix(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k = min(items_per_batch, len(yb))
        xb, yb = xb.clone(), yb.clone()
        xb[:k] = draw(k)
        yb[:k] = target_class
        return xb, yb

    return mix


def check_classes(params: object, num_classes: int) -> None:
    """Raise if ``params.target_class`` or ``params.source_class`` (when set) is not a class.

    Parameters
    ----------
    params : object
        Attack parameters with ``target_class`` and ``source_class`` fields
        (``None`` means unset).
    num_classes : int
        The dataset's number of classes.
    """
    for name in ("target_class", "source_class"):
        label = getattr(params, name)
        if label is not None:
            check_class(name, label, num_classes)


def check_class(name: str, label: int, num_classes: int) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``0 <= label < num_classes``."""
    if not 0 <= label < num_classes:
        raise ValueError(f"{name}: got {label!r}, must be a class in 0..{num_classes - 1}")


def compose_params(name: str, parts: tuple[type, ...]) -> type:
    """One parameter dataclass with the fields of the dataclasses ``parts``, in their order.

    It is what the registry reads (names, defaults) for an attack built of
    parts; :func:`build_part` gives each part its own fields back, and the
    part checks them.

    Examples
    --------
    >>> @dataclasses.dataclass(frozen=True)
    ... class A:
    ...     a: int = 1
    >>> @dataclasses.dataclass(frozen=True)
    ... class B:
    ...     b: str = "x"
    >>> AB = compose_params("AB", (A, B))
    >>> build_part(B, AB(a=2, b="y"))
    B(b='y')
    """
    fields = [
        (f.name, f.type, dataclasses.field(default=f.default))
        for part in parts
        for f in dataclasses.fields(part)
    ]
    return dataclasses.make_dataclass(name, fields, frozen=True)


def build_part(part_type: type, values: object) -> Any:
    """The part ``part_type`` built (and checked) from the fields it has in ``values``."""
    return part_type(**{f.name: getattr(values, f.name) for f in dataclasses.fields(part_type)})


class AttackClient(HonestClient):
    """An attacker: honest outside its schedule, malicious inside it.

    The schedule comes from the config's ``attack`` block: active from
    ``start_round`` to ``end_round`` (inclusive, open-ended when unset), or in
    ``start_round`` alone when ``single_shot`` is true. Replies are tagged
    with ``malicious`` and :data:`ACTIVE_TAG`. In its active rounds the
    attacker trains with ``attack.training`` over ``training``
    (:func:`~flsec_flower.config.attacker_training`), outside them as an
    honest client; it never adds ``training.gradient_noise_std``.
    """

    adds_gradient_noise: ClassVar[bool] = False

    def __init__(self, env: ClientEnv, model: nn.Module | None = None) -> None:
        if env.cfg.attack is None:
            raise ValueError(
                f"client {env.partition_id}: {type(self).__name__} needs the config's attack "
                "block (its schedule); without it the client would never attack. Give the "
                "config an attack block, or build the attack standalone "
                "(clients.standalone.StandaloneAttackClient)"
            )
        super().__init__(env, model)

    def training_config(self, server_round: int) -> TrainingConfig:
        """``attack.training`` over ``training`` while active, ``training`` otherwise."""
        if self.active(server_round):
            return attacker_training(self.env.cfg)
        return self.env.cfg.training

    def active(self, server_round: int) -> bool:
        """Whether the attack acts in ``server_round``."""
        return attack_round(self.env.cfg, server_round)

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        """Tag the reply as coming from an attacker, active or not this round."""
        return {MALICIOUS: True, ACTIVE_TAG: self.active(server_round)}

    @classmethod
    def attack_params(cls, cfg: ExperimentConfig) -> dict[str, Any]:
        """The attack's parameters: ``attack.params`` over the constructor defaults.

        The server side (``server_metrics``, ``server_adversary``) builds no
        client, so it reads the parameters here. Defaults are the fields of
        the attack's parameter dataclass (``params_type``) when it has one,
        else the keyword defaults of ``__init__`` of this class and of its bases.
        """
        params: dict[str, Any] = {}
        params_type = getattr(cls, "params_type", None)
        if params_type is not None:
            params.update(
                (f.name, f.default)
                for f in dataclasses.fields(params_type)
                if f.default is not dataclasses.MISSING
            )
        for klass in () if params_type is not None else cls.__mro__:
            if klass is HonestClient:
                break
            if "__init__" not in vars(klass):
                continue
            for p in inspect.signature(vars(klass)["__init__"]).parameters.values():
                if p.kind is p.KEYWORD_ONLY and p.default is not p.empty:
                    params.setdefault(p.name, p.default)
        params.update(cfg.attack.params if cfg.attack is not None else {})
        return params
