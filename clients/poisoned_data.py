"""Data poisoning as dataset wrappers, usable from any training loop.

A data-poisoning attack is a frozen dataclass (its fields are its
parameters) with ``poison(x, y, generator) -> (x', y')`` on a client's
tensors; :class:`PoisonedDataset` applies it to any map-style dataset of
``(input, label)`` items, so a Flower app's own ``DataLoader`` trains on the
poisoned view. The ``NumPyClient`` attacks (:class:`~clients.label_flip.LabelFlipClient`,
:class:`~clients.pixel_trojan.PixelTrojanClient`) call the same ``poison``.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch.utils.data import Dataset as TorchDataset


class DataPoisoning(Protocol):
    """What every data-poisoning attack provides."""

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The poisoned view of ``(x, y)`` (new tensors; the inputs are not modified)."""
        ...


class PoisonedDataset(TorchDataset[tuple[torch.Tensor, torch.Tensor]]):
    """A dataset of ``(input, label)`` items, poisoned once by ``attack``.

    The items of ``base`` are stacked into tensors, poisoned with a generator
    seeded by ``seed`` and served one by one (labels as 0-d int64 tensors).
    Meant for a client's partition (it holds the poisoned copy in memory).

    Parameters
    ----------
    base : torch.utils.data.Dataset
        Map-style dataset whose items are ``(input, label)``.
    attack : DataPoisoning
        The poisoning, e.g. :class:`~clients.label_flip.LabelFlip`.
    seed : int
        Seed of the poisoning's random choices.

    Raises
    ------
    ValueError
        If ``base`` is empty.

    Examples
    --------
    >>> from clients.label_flip import LabelFlip
    >>> base = [(torch.zeros(2), 0), (torch.ones(2), 3)]
    >>> [int(y) for _, y in PoisonedDataset(base, LabelFlip(num_classes=10))]
    [9, 6]
    """

    def __init__(self, base: object, attack: DataPoisoning, seed: int = 0) -> None:
        items = [base[i] for i in range(len(base))]  # type: ignore[index, arg-type]
        if not items:
            raise ValueError("base: the dataset to poison is empty")
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
        self.x, self.y = attack.poison(x, y, torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        """Number of items."""
        return len(self.y)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The poisoned item ``index``."""
        return self.x[index], self.y[index]
