"""Pixel-pattern trojan (backdoor): a trigger stamped on images relabelled to a target class."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from clients.attack import backdoor_mixer, check_class
from clients.backdoor import BackdoorClient
from flsec_flower.config import ExperimentConfig, attacker_training
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed
from flsec_flower.seeds import BatchStream
from flsec_flower.training import BatchTransform, predict, resolve_batch_size

PATTERNS = ("plus", "square", "checkerboard", "custom")
"""Trigger shapes :func:`stamp` knows."""

DEFAULT_SIZE = {"plus": 5, "square": 5, "checkerboard": 3}
"""Side of each pattern's bounding box when ``trigger_size`` is not given."""


def _default_offset(pattern: str, size: int, height: int, width: int) -> tuple[int, int]:
    if pattern == "plus":
        return max(0, min(5, height - size)), max(0, min(5 - size // 2, width - size))
    if pattern == "square":
        return max(0, height - size - 2), max(0, width - size - 2)
    return height - size, width - size


def trigger(
    input_shape: Sequence[int],
    pattern: str = "plus",
    *,
    trigger_size: int | None = None,
    offset: Sequence[int] | None = None,
    mask: Sequence[Sequence[int]] | None = None,
    value: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Where a trigger is written and what: ``(where, values)`` over the spatial dimensions.

    For images ``(C, H, W)`` both tensors have shape ``(H, W)`` and every
    channel is stamped; for tabular inputs ``(F,)`` they have shape ``(F,)``
    and only a ``custom`` mask applies. The pattern's bounding box of side
    ``s = trigger_size`` has its top-left pixel at ``offset = (r, c)``:

    - ``plus``: the column ``c + s//2`` over rows ``r .. r+s-1`` and the row
      ``r + s//2`` over columns ``c .. c+s-1`` are set to ``value``. Default
      ``s = 5`` with the vertical bar at column 5 from row 5 (``offset =
      (5, 3)``), the Fashion-MNIST trigger of Ozdayi, Kantarcioglu & Gel,
      "Defending against Backdoors in Federated Learning with Robust Learning
      Rate", AAAI 2021 (their CIFAR-10 plus is ``s = 7``, ``offset = (5, 2)``,
      ``value = 0``);
    - ``square``: the ``s x s`` block is set to ``value``; default ``s = 5``
      two pixels from the bottom-right corner (rows/columns 21..25 on 28x28,
      Ozdayi et al.'s Fashion-MNIST square);
    - ``checkerboard``: pixel ``(r+i, c+j)`` is set to ``value * ((i + j) mod
      2)`` (zeros included); default ``s = 3`` in the bottom-right corner, the
      trigger of Rance & Svoboda's fairness-attack code;
    - ``custom``: the listed positions (``[row, col]`` for images,
      ``[feature]`` for tabular data; negative indices count from the end)
      are set to ``value``.

    Defaults are moved up/left just enough to fit small images (8x8 digits).

    Parameters
    ----------
    input_shape : sequence of int
        Shape of one input, ``(C, H, W)`` or ``(F,)``.
    pattern : str
        One of :data:`PATTERNS`.
    trigger_size : int, optional
        Side ``s`` of the bounding box (:data:`DEFAULT_SIZE`).
    offset : sequence of two int, optional
        Top-left pixel ``(r, c)`` of the bounding box.
    mask : sequence of sequences of int, optional
        Positions of a ``custom`` pattern.
    value : float
        Value written (1.0, the maximum of inputs scaled to ``[0, 1]``).

    Returns
    -------
    where : torch.Tensor
        Boolean, ``True`` where the trigger writes.
    values : torch.Tensor
        float32, the written values (zero where ``where`` is false).

    Raises
    ------
    ValueError
        Naming the parameter, if the pattern is unknown or does not fit.

    Examples
    --------
    >>> where, values = trigger((1, 8, 8), "checkerboard")
    >>> values[5:, 5:]
    tensor([[0., 1., 0.],
            [1., 0., 1.],
            [0., 1., 0.]])
    >>> int(trigger((1, 28, 28), "plus")[0].sum())
    9
    """
    if pattern not in PATTERNS:
        raise ValueError(f"pattern: got {pattern!r}, allowed: {', '.join(PATTERNS)}")
    spatial = tuple(int(s) for s in (input_shape[1:] if len(input_shape) == 3 else input_shape))
    where = torch.zeros(spatial, dtype=torch.bool)
    values = torch.zeros(spatial, dtype=torch.float32)
    if pattern == "custom":
        if not mask:
            raise ValueError("mask: a custom pattern needs a non-empty list of positions")
        for pos in mask:
            index = tuple(int(i) for i in pos)
            if len(index) != len(spatial) or not all(
                -n <= i < n for i, n in zip(index, spatial, strict=True)
            ):
                raise ValueError(f"mask: position {list(pos)!r} is not inside inputs of {spatial}")
            where[index] = True
            values[index] = value
        return where, values
    if mask is not None:
        raise ValueError(f"mask: only used by pattern 'custom', got pattern {pattern!r}")
    if len(spatial) != 2:
        raise ValueError(
            f"pattern: {pattern!r} needs image inputs (C, H, W), got {tuple(input_shape)}"
        )
    height, width = spatial
    size = DEFAULT_SIZE[pattern] if trigger_size is None else int(trigger_size)
    if not 1 <= size <= min(height, width):
        raise ValueError(f"trigger_size: got {trigger_size!r}, must be in 1..{min(height, width)}")
    if offset is not None and len(offset) != 2:
        raise ValueError(f"offset: got {offset!r}, expected [row, column]")
    r, c = _default_offset(pattern, size, height, width) if offset is None else map(int, offset)
    if not (0 <= r <= height - size and 0 <= c <= width - size):
        raise ValueError(
            f"offset: got {list(offset or (r, c))!r}; a {size}x{size} pattern needs row in "
            f"0..{height - size} and column in 0..{width - size}"
        )
    if pattern == "plus":
        where[r : r + size, c + size // 2] = True
        where[r + size // 2, c : c + size] = True
        values[where] = value
    elif pattern == "square":
        where[r : r + size, c : c + size] = True
        values[where] = value
    else:
        where[r : r + size, c : c + size] = True
        i, j = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
        values[r : r + size, c : c + size] = value * ((i + j) % 2).float()
    return where, values


def stamp(
    x: torch.Tensor,
    pattern: str = "plus",
    *,
    trigger_size: int | None = None,
    offset: Sequence[int] | None = None,
    mask: Sequence[Sequence[int]] | None = None,
    value: float = 1.0,
) -> torch.Tensor:
    """Return a copy of the batch ``x`` with the trigger of :func:`trigger` written in.

    ``x'[n, ch, i, j] = values[i, j]`` where the trigger writes, ``x[n, ch, i, j]``
    elsewhere (``x'[n, f]`` for tabular inputs).

    Parameters
    ----------
    x : torch.Tensor
        Batch of inputs, ``(N, C, H, W)`` or ``(N, F)``.
    pattern, trigger_size, offset, mask, value
        As in :func:`trigger`.

    Returns
    -------
    torch.Tensor
        The stamped batch, same shape, dtype and device as ``x``.

    Examples
    --------
    >>> x = torch.zeros(1, 1, 8, 8)
    >>> int(stamp(x, "square").sum()), int(x.sum())
    (25, 0)
    """
    where, values = trigger(
        tuple(x.shape[1:]),
        pattern,
        trigger_size=trigger_size,
        offset=offset,
        mask=mask,
        value=value,
    )
    return torch.where(where.to(x.device), values.to(x.device, x.dtype), x)


@dataclass(frozen=True)
class PixelTrigger:
    """Pixel-trigger poisoning of a fraction of the data (Ozdayi et al. 2021), as a dataset wrapper.

    ``floor(poison_fraction * n_s)`` of the ``n_s`` eligible samples (those of
    ``source_class``, or all), drawn with the generator, are stamped
    (:func:`stamp`) and relabelled ``target_class``; wrap a dataset with
    :class:`~clients.poisoned_data.PoisonedDataset`. The trigger is checked
    against the inputs' shape at the first :meth:`poison`.

    Parameters
    ----------
    target_class : int
        Label the trigger maps to (>= 0).
    pattern, trigger_size, offset, mask, value
        The trigger, as in :func:`trigger`.
    source_class : int, optional
        Only samples of this class are stamped; ``None`` stamps any.
    poison_fraction : float
        Fraction of eligible samples poisoned, in ``[0, 1]``.

    Examples
    --------
    >>> x, y = PixelTrigger(7, "square", poison_fraction=1.0).poison(
    ...     torch.zeros(2, 1, 8, 8), torch.tensor([0, 1]), torch.Generator())
    >>> y.tolist(), int(x.sum())
    ([7, 7], 50)
    """

    target_class: int
    pattern: str = "plus"
    trigger_size: int | None = None
    offset: list[int] | None = None
    mask: list[list[int]] | None = None
    value: float = 1.0
    source_class: int | None = None
    poison_fraction: float = 0.5

    def __post_init__(self) -> None:
        """Check the fields that do not depend on the data."""
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern: got {self.pattern!r}, allowed: {', '.join(PATTERNS)}")
        if not (isinstance(self.target_class, int) and self.target_class >= 0):
            raise ValueError(f"target_class: got {self.target_class!r}, must be a class >= 0")
        if not 0.0 <= self.poison_fraction <= 1.0:
            raise ValueError(f"poison_fraction: got {self.poison_fraction!r}, must be in [0, 1]")

    def stamp(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with this trigger (:func:`stamp`)."""
        return stamp(x, **_trigger_kwargs(vars(self)))

    def poison(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The data with its poisoned part stamped and relabelled."""
        if self.source_class is None:
            eligible = torch.arange(len(y), device=y.device)
        else:
            eligible = torch.nonzero(y == self.source_class).flatten()
        k = int(np.floor(self.poison_fraction * len(eligible)))
        chosen = eligible[
            torch.randperm(len(eligible), generator=generator)[:k].to(eligible.device)
        ]
        x, y = x.clone(), y.clone()
        x[chosen] = self.stamp(x[chosen])
        y[chosen] = self.target_class
        return x, y


@dataclass(frozen=True)
class PixelBackdoor:
    """The pixel-trigger backdoor's parameters (see :class:`PixelTrojanClient`).

    Parameters
    ----------
    target_class : int
        Label the trigger maps to (7, Ozdayi et al.'s Fashion-MNIST sneaker).
    pattern, trigger_size, offset, mask, value
        The trigger, as in :func:`trigger`.
    source_class : int, optional
        Only samples of this class are stamped (Ozdayi et al. use 5, sandal);
        ``None`` stamps samples of any class (Bagdasaryan et al.; Rance &
        Svoboda).
    poison_fraction : float, optional
        Fraction of eligible samples poisoned; 0.5 (Ozdayi et al.) when
        neither this nor ``items_per_batch`` is given.
    items_per_batch : int, optional
        Backdoor items ``c`` per mini-batch (Bagdasaryan et al. use 20 of 64).
    """

    target_class: int = 7
    pattern: str = "plus"
    trigger_size: int | None = None
    offset: list[int] | None = None
    mask: list[list[int]] | None = None
    value: float = 1.0
    source_class: int | None = None
    poison_fraction: float | None = None
    items_per_batch: int | None = None

    def __post_init__(self) -> None:
        """Check the fields that do not depend on the data."""
        if self.poison_fraction is not None and self.items_per_batch is not None:
            raise ValueError(
                "poison_fraction and items_per_batch: give one of them (fraction of the data, "
                "or backdoor items per batch)"
            )
        fraction = self.poison_fraction
        if fraction is not None and not 0.0 <= fraction <= 1.0:
            raise ValueError(f"poison_fraction: got {fraction!r}, must be in [0, 1]")

    def trigger_kwargs(self) -> dict[str, Any]:
        """The trigger's keyword arguments of :func:`trigger` and :func:`stamp`."""
        return _trigger_kwargs(vars(self))

    def bind(self, env: ClientEnv) -> PixelBackdoorData:
        """Check the parameters against the client's data; the backdoor of its partition."""
        ds = env.dataset
        check_class("target_class", self.target_class, ds.num_classes)
        if self.source_class is not None:
            check_class("source_class", self.source_class, ds.num_classes)
        trigger(ds.input_shape, **self.trigger_kwargs())
        batch = resolve_batch_size(attacker_training(env.cfg).batch_size, int(env.x.shape[0]))
        if self.items_per_batch is not None and not 1 <= self.items_per_batch <= batch:
            raise ValueError(
                f"items_per_batch: got {self.items_per_batch!r}, must be in 1..{batch} "
                "(the attacker's training.batch_size on its data)"
            )
        return PixelBackdoorData(self, env)

    def server_metric(self, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric:
        """``backdoor_accuracy`` of the global model on stamped test images.

        The test images of ``source_class`` (all when unset), without those
        labelled ``target_class`` when ``evaluation.backdoor_exclude_target``.
        """
        keep = torch.ones(len(dataset.y_test), dtype=torch.bool)
        if self.source_class is not None:
            keep &= dataset.y_test == self.source_class
        if cfg.evaluation.backdoor_exclude_target:
            keep &= dataset.y_test != self.target_class
        x = stamp(dataset.x_test[keep], **self.trigger_kwargs())
        return backdoor_metric(x, self.target_class, cfg.evaluation.batch_size)

    def reserved_indices(self, cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
        """None: the trigger needs no reserved images."""
        return None


class PixelBackdoorData:
    """A :class:`PixelBackdoor` bound to one client's partition.

    Parameters
    ----------
    params : PixelBackdoor
        The backdoor.
    env : ClientEnv
        The client's environment (its data and seeds).
    """

    def __init__(self, params: PixelBackdoor, env: ClientEnv) -> None:
        self.params = params
        self.env = env
        self.poison_fraction = 0.5 if params.poison_fraction is None else params.poison_fraction
        self.trigger = PixelTrigger(
            params.target_class,
            source_class=params.source_class,
            poison_fraction=self.poison_fraction,
            **params.trigger_kwargs(),
        )

    def eligible(self) -> torch.Tensor:
        """Indices of the partition's samples that may be stamped."""
        y = self.env.y
        if self.params.source_class is None:
            return torch.arange(len(y), device=y.device)
        return torch.nonzero(y == self.params.source_class).flatten()

    def training_data(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``poison_fraction`` mode: ``(x, y)`` with its poisoned part (:class:`PixelTrigger`)."""
        if self.params.items_per_batch is not None:
            return x, y
        gen = torch.Generator().manual_seed(client_seed(self.env.cfg, self.env.partition_id, 0))
        return self.trigger.poison(x, y, gen)

    def batch_transform(self, server_round: int) -> BatchTransform | None:
        """``items_per_batch`` mode: replace each batch's first ``c`` items by backdoor items."""
        items = self.params.items_per_batch
        if items is None:
            return None
        pool = self.eligible()
        if len(pool) == 0:
            return None
        cfg, pid = self.env.cfg, self.env.partition_id
        gen = torch.Generator().manual_seed(
            client_seed(cfg, pid, server_round) + BatchStream.POISON_BATCHES
        )
        x, kwargs = self.env.x, self.params.trigger_kwargs()

        def draw(k: int) -> torch.Tensor:
            pick = pool[torch.randint(len(pool), (k,), generator=gen).to(pool.device)]
            return stamp(x[pick], **kwargs)

        return backdoor_mixer(items, draw, self.params.target_class)


class PixelTrojanClient(BackdoorClient):
    """Pixel-pattern backdoor by data poisoning (Ozdayi et al. 2021; Bagdasaryan et al. 2020).

    While active the attacker trains on a poisoned view of its partition,
    either

    - ``poison_fraction`` mode (Ozdayi et al.): a fixed ``floor(f * n_s)`` of
      its ``n_s`` eligible samples (those of ``source_class``, or all) are
      stamped and relabelled ``target_class``; or
    - ``items_per_batch`` mode (Bagdasaryan et al., "How To Backdoor
      Federated Learning", AISTATS 2020): the first ``c`` items of every
      mini-batch are replaced by stamped eligible samples drawn at random,
      labelled ``target_class``.

    The server reports ``backdoor_accuracy``: the fraction of stamped test
    images (of ``source_class`` when set; without those labelled
    ``target_class`` when ``evaluation.backdoor_exclude_target``) that the
    global model assigns to ``target_class``.

    Parameters: the fields of :class:`PixelBackdoor`.
    """

    backdoor_type = PixelBackdoor


def _trigger_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params[k] for k in ("pattern", "trigger_size", "offset", "mask", "value")}


def backdoor_metric(x: torch.Tensor, target_class: int, batch_size: int = 1024) -> ServerMetric:
    """``metric(model) -> {"backdoor_accuracy": a}``: the fraction of ``x`` predicted as target.

    ``a = |{i : argmax f(x_i) = t}| / |x|`` (``nan`` when ``x`` is empty).

    Parameters
    ----------
    x : torch.Tensor
        Backdoor inputs (triggered test images, or held-out semantic images).
    target_class : int
        The attacker's target label ``t``.
    batch_size : int
        Evaluation batch size.

    Returns
    -------
    ServerMetric
        The metric; ``x`` is moved to the model's device once.

    Examples
    --------
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    >>> backdoor_metric(torch.zeros(0, 4), 1)(model)
    {'backdoor_accuracy': nan}
    """
    cache: dict[torch.device, torch.Tensor] = {}

    @torch.no_grad()
    def metric(model: nn.Module) -> dict[str, float]:
        if len(x) == 0:
            return {"backdoor_accuracy": float("nan")}
        device = next(model.parameters()).device
        if device not in cache:
            cache.clear()
            cache[device] = x.to(device)
        xs = cache[device]
        model.eval()
        hits = sum(
            int((predict(model(xs[i : i + batch_size])) == target_class).sum())
            for i in range(0, len(xs), batch_size)
        )
        return {"backdoor_accuracy": hits / len(xs)}

    return metric
