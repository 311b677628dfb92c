"""Label flipping: the attacker trains honestly on relabelled data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from clients.attack import AttackClient
from flsec_flower.experiment import ClientEnv


def flip_labels(
    y: torch.Tensor, num_classes: int, mapping: dict[int, int] | None = None
) -> torch.Tensor:
    r"""Relabel ``y``: :math:`y \mapsto C - 1 - y`, or by ``mapping``.

    Without a mapping every label is reversed, :math:`y' = C - 1 - y` for
    ``C`` classes (the label-flipping attack of He, Karimireddy & Jaggi,
    "Byzantine-Robust Learning on Heterogeneous Datasets via Resampling"
    (arXiv 2006.09365, 2020; ICLR 2022 as "... via Bucketing"), and of
    Prakash & Avestimehr's DiverseFL, "Mitigating Byzantine Attacks in
    Federated Learning", arXiv 2010.07541, 2020). With a mapping, each
    ``source`` label becomes ``target`` and the other labels are kept.

    Parameters
    ----------
    y : torch.Tensor
        Integer labels in ``0 .. num_classes - 1``.
    num_classes : int
        Number of classes ``C``.
    mapping : dict of int to int, optional
        ``{source: target}``; ``None`` reverses every label.

    Returns
    -------
    torch.Tensor
        The new labels (a new tensor; ``y`` is not modified).

    Examples
    --------
    >>> flip_labels(torch.tensor([0, 1, 9]), 10)
    tensor([9, 8, 0])
    >>> flip_labels(torch.tensor([0, 1, 9]), 10, {1: 7})
    tensor([0, 7, 9])
    """
    if mapping is None:
        return num_classes - 1 - y
    table = torch.arange(num_classes, device=y.device)
    for source, target in mapping.items():
        table[source] = target
    return table[y]


def _checked_mapping(mapping: dict[Any, Any], num_classes: int) -> dict[int, int]:
    out: dict[int, int] = {}
    for key, value in mapping.items():
        try:
            source, target = int(key), int(value)
        except (TypeError, ValueError):
            raise ValueError(f"mapping: {key!r}: {value!r} is not a pair of class labels") from None
        if not (0 <= source < num_classes and 0 <= target < num_classes):
            raise ValueError(
                f"mapping: {key!r}: {value!r} outside the classes 0..{num_classes - 1}"
            )
        out[source] = target
    return out


@dataclass(frozen=True)
class LabelFlip:
    """Label flipping as a data poisoning (:func:`flip_labels`).

    Wrap a dataset with :class:`~clients.poisoned_data.PoisonedDataset`.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C`` (>= 2).
    mapping : dict of int to int, optional
        ``{source: target}`` label pairs; ``None`` (the papers' setting)
        maps ``y`` to ``C - 1 - y``.

    Raises
    ------
    ValueError
        Naming the field, for labels outside the classes.

    Examples
    --------
    >>> LabelFlip(10, {1: 7}).poison(torch.zeros(2, 1), torch.tensor([1, 2]), None)[1]
    tensor([7, 2])
    """

    num_classes: int
    mapping: dict[Any, Any] | None = None

    def __post_init__(self) -> None:
        """Check the classes and normalise the mapping's keys and values to ``int``."""
        if isinstance(self.num_classes, bool) or not (
            isinstance(self.num_classes, int) and self.num_classes >= 2
        ):
            raise ValueError(f"num_classes: got {self.num_classes!r}, must be an integer >= 2")
        if self.mapping is not None:
            object.__setattr__(self, "mapping", _checked_mapping(self.mapping, self.num_classes))

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, flip_labels(y))``."""
        return x, flip_labels(y, self.num_classes, self.mapping)


class LabelFlipClient(AttackClient):
    """Train on flipped labels (:func:`flip_labels`) while the attack is active.

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    mapping : dict of int to int, optional
        ``{source: target}`` label pairs; ``None`` (the papers' setting)
        maps ``y`` to ``C - 1 - y``.
    """

    def __init__(
        self,
        env: ClientEnv,
        model: nn.Module | None = None,
        *,
        mapping: dict[Any, Any] | None = None,
    ) -> None:
        super().__init__(env, model)
        self.flip = LabelFlip(env.dataset.num_classes, mapping)
        self.mapping = self.flip.mapping

    def training_data(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The partition with flipped labels while active, else the partition."""
        x, y = super().training_data(server_round)
        if not self.active(server_round):
            return x, y
        return self.flip.poison(x, y, None)
