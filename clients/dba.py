"""Distributed backdoor attack (DBA): a global trigger split into one local trigger per attacker."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from flwr.common import NDArrays, Scalar
from torch import nn

from clients.attack import AttackClient, check_classes
from clients.model_poisoning import check_number
from clients.model_replacement import Scaling
from clients.pixel_trojan import PixelTrigger, backdoor_metric, stamp
from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed, malicious_ids

DBA_PART = "dba_part"
"""Fit-metrics key: the local trigger (``0 .. parts-1``) the attacker stamps."""


def dba_masks(
    input_shape: Sequence[int],
    parts: int = 4,
    size: int | None = None,
    gap: int = 2,
    row_gap: int = 3,
    offset: Sequence[int] = (0, 0),
) -> list[list[list[int]]]:
    r"""Pixel positions ``[row, col]`` of each local trigger of DBA's layout.

    Local trigger :math:`k \in \{0, \dots, K-1\}` is a horizontal bar of
    ``size`` pixels on row :math:`r_0 + \lfloor k/2 \rfloor \cdot
    \mathrm{row\_gap}`, from column :math:`c_0 + (k \bmod 2)(\mathrm{size} +
    \mathrm{gap})`; the global trigger is the union of the local ones. The
    defaults are Xie et al.'s MNIST triggers (``trigger_num: 4``, "gap 2 size
    1*4 base (0, 0)": rows 0 and 3, columns 0..3 and 6..9). Without ``size``
    the bar is 4 pixels, shortened to ``(W - gap) // 2`` on narrow images
    (3 on 8x8 digits).

    Parameters
    ----------
    input_shape : sequence of int
        Shape of one image, ``(C, H, W)``.
    parts : int
        Number of local triggers ``K`` (>= 1).
    size : int, optional
        Pixels per bar.
    gap : int
        Columns between the two bars of a row.
    row_gap : int
        Rows between two rows of bars.
    offset : sequence of two int
        ``(r0, c0)``, the first bar's first pixel.

    Returns
    -------
    list of list of [row, col]
        One position list per local trigger.

    Raises
    ------
    ValueError
        Naming the parameter, if the layout does not fit the images.

    Examples
    --------
    >>> dba_masks((1, 28, 28), parts=2)
    [[[0, 0], [0, 1], [0, 2], [0, 3]], [[0, 6], [0, 7], [0, 8], [0, 9]]]
    >>> dba_masks((1, 8, 8))[3]
    [[3, 5], [3, 6], [3, 7]]
    """
    if len(input_shape) != 3:
        raise ValueError(f"input_shape: DBA's triggers need images (C, H, W), got {input_shape}")
    height, width = int(input_shape[1]), int(input_shape[2])
    if not (isinstance(parts, int) and parts >= 1):
        raise ValueError(f"parts: got {parts!r}, must be an integer >= 1")
    if len(offset) != 2:
        raise ValueError(f"offset: got {offset!r}, expected [row, column]")
    r0, c0 = (int(v) for v in offset)
    length = min(4, (width - c0 - gap) // 2) if size is None else int(size)
    if length < 1:
        raise ValueError(f"size: got {size!r}, must be >= 1 and fit the {width}-pixel width")
    masks = []
    for k in range(parts):
        row = r0 + (k // 2) * row_gap
        start = c0 + (k % 2) * (length + gap)
        if not (0 <= row < height and start >= 0 and start + length <= width):
            raise ValueError(
                f"size, gap, row_gap, offset: local trigger {k} (row {row}, columns "
                f"{start}..{start + length - 1}) does not fit {height}x{width} images"
            )
        masks.append([[row, start + i] for i in range(length)])
    return masks


@dataclass(frozen=True)
class DistributedTrigger:
    """DBA's parameters: the layout of the local triggers and how each attacker poisons.

    Xie, Huang, Chen & Li, "DBA: Distributed Backdoor Attacks against
    Federated Learning", ICLR 2020. :meth:`local` is attacker ``k``'s data
    poisoning (a :class:`~clients.pixel_trojan.PixelTrigger` with the ``k``-th
    part), to wrap a dataset with :class:`~clients.poisoned_data.PoisonedDataset`;
    :meth:`global_trigger` stamps the union, the trigger used at inference.

    Parameters
    ----------
    target_class : int
        Label the triggers map to (2, the authors' ``poison_label_swap``).
    parts, size, gap, row_gap, offset
        The layout (:func:`dba_masks`).
    local_masks : list of list of [row, col], optional
        Explicit local triggers, replacing the layout.
    value : float
        Value written in the trigger's pixels.
    source_class : int, optional
        Only samples of this class are stamped; ``None`` stamps any.
    poison_fraction : float
        Fraction of the eligible samples stamped and relabelled, in ``[0, 1]``
        (0.3125: the authors' 20 poisoned items in batches of 64).
    boost : float, optional
        Scale the attacker's update by this factor (the authors'
        ``scale_weights_poison``, model replacement's boost, :class:`Scaling`);
        ``None`` sends it unscaled.
    single_shot_interval : int, optional
        Xie et al.'s single-shot setting A-S: the attacker of rank ``k``
        among the configured attackers poisons in round ``attack.start_round
        + k * single_shot_interval`` only (:func:`single_shot_round`; the
        authors' MNIST rounds 12, 14, 16, 18: ``start_round`` 12, interval
        2). ``None``: A-M, every attacker in every round of the attack
        block's schedule.

    Examples
    --------
    >>> dba = DistributedTrigger(target_class=7, parts=2)
    >>> int(dba.global_trigger(torch.zeros(1, 1, 8, 8)).sum())
    6
    >>> dba.local(1, (1, 8, 8)).mask
    [[0, 5], [0, 6], [0, 7]]
    """

    target_class: int = 2
    parts: int = 4
    size: int | None = None
    gap: int = 2
    row_gap: int = 3
    offset: Sequence[int] = (0, 0)
    local_masks: list[list[list[int]]] | None = None
    value: float = 1.0
    source_class: int | None = None
    poison_fraction: float = 0.3125
    boost: float | None = None
    single_shot_interval: int | None = None

    def __post_init__(self) -> None:
        """Check the fields that do not depend on the data."""
        if not (isinstance(self.target_class, int) and self.target_class >= 0):
            raise ValueError(f"target_class: got {self.target_class!r}, must be a class >= 0")
        if not (isinstance(self.parts, int) and self.parts >= 1):
            raise ValueError(f"parts: got {self.parts!r}, must be an integer >= 1")
        if self.local_masks is not None and len(self.local_masks) != self.parts:
            raise ValueError(
                f"local_masks: got {len(self.local_masks)} local triggers, parts={self.parts}"
            )
        if not 0.0 <= self.poison_fraction <= 1.0:
            raise ValueError(f"poison_fraction: got {self.poison_fraction!r}, must be in [0, 1]")
        if self.boost is not None:
            check_number("boost", self.boost, above=0)
        interval = self.single_shot_interval
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int) or interval < 1
        ):
            raise ValueError(
                f"single_shot_interval: got {interval!r}, must be an integer >= 1 (rounds "
                "between two attackers' single shots) or null for every round"
            )

    def masks(self, input_shape: Sequence[int]) -> list[list[list[int]]]:
        """Each local trigger's positions (``local_masks``, else :func:`dba_masks`)."""
        if self.local_masks is not None:
            return [[list(map(int, pos)) for pos in mask] for mask in self.local_masks]
        return dba_masks(input_shape, self.parts, self.size, self.gap, self.row_gap, self.offset)

    def local(self, k: int, input_shape: Sequence[int]) -> PixelTrigger:
        """Attacker ``k``'s data poisoning: the ``k``-th local trigger, ``0 <= k < parts``."""
        if not 0 <= k < self.parts:
            raise ValueError(f"k: got {k!r}, must be in 0..{self.parts - 1}")
        return self._pixel_trigger(self.masks(input_shape)[k], input_shape)

    def global_trigger(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` stamped with every local trigger (the global trigger)."""
        shape = tuple(x.shape[1:])
        union = [pos for mask in self.masks(shape) for pos in mask]
        return self._pixel_trigger(union, shape).stamp(x)

    def _pixel_trigger(self, mask: list[list[int]], input_shape: Sequence[int]) -> PixelTrigger:
        trigger = PixelTrigger(
            self.target_class,
            "custom",
            mask=mask,
            value=self.value,
            source_class=self.source_class,
            poison_fraction=self.poison_fraction,
        )
        trigger.stamp(torch.zeros(1, *input_shape))
        return trigger


def attacker_part(cfg: ExperimentConfig, partition_id: int, parts: int) -> int:
    """The local trigger of attacker ``partition_id``: its rank among the attackers, mod ``parts``.

    A partition that is not among the configured attackers gets
    ``partition_id mod parts``.

    Examples
    --------
    >>> from flsec_flower.config import from_dict
    >>> cfg = from_dict({"attack": {"name": "dba", "malicious_ids": [3, 8, 5]}})
    >>> [attacker_part(cfg, i, 2) for i in (3, 5, 8)]
    [0, 1, 0]
    """
    attackers = sorted(malicious_ids(cfg))
    rank = attackers.index(partition_id) if partition_id in attackers else partition_id
    return rank % parts


def single_shot_round(cfg: ExperimentConfig, partition_id: int, interval: int) -> int:
    """The one round attacker ``partition_id`` poisons in DBA's A-S setting.

    ``attack.start_round + k * interval``, ``k`` the attacker's rank among
    the configured attackers (a partition that is not one of them: its id).

    Examples
    --------
    >>> from flsec_flower.config import from_dict
    >>> cfg = from_dict({"attack": {"name": "dba", "malicious_ids": [3, 8, 5], "start_round": 12}})
    >>> [single_shot_round(cfg, i, 2) for i in (3, 5, 8)]
    [12, 14, 16]
    """
    attackers = sorted(malicious_ids(cfg))
    rank = attackers.index(partition_id) if partition_id in attackers else partition_id
    start = cfg.attack.start_round if cfg.attack is not None else 1
    return start + rank * interval


class DbaClient(AttackClient):
    """DBA (Xie et al., ICLR 2020): each attacker trains on its own part of the global trigger.

    While active the ``k``-th attacker (:func:`attacker_part`) stamps local
    trigger ``k`` on ``poison_fraction`` of its eligible samples, relabels them
    ``target_class`` (:meth:`DistributedTrigger.local`), trains, and, with
    ``boost``, scales its update (:class:`~clients.model_replacement.Scaling`).
    No attacker ever trains on the global trigger.

    With ``single_shot_interval`` (the authors' A-S) each attacker is active
    in its own round only (:func:`single_shot_round`), which replaces the
    attack block's schedule (``end_round``, when set, must not come before
    the last attacker's round). Under partial participation, make sure the
    attackers are sampled then: ``attack.force_participation: true``
    (without ``single_shot``) samples every attacker from ``start_round`` on.

    The server reports ``backdoor_accuracy`` for the global trigger and
    ``backdoor_accuracy_local_k`` for each local trigger ``k``: the fraction
    of stamped test images (of ``source_class`` when set; without those
    labelled ``target_class`` when ``evaluation.backdoor_exclude_target``)
    predicted as ``target_class``.

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    **params
        The fields of :class:`DistributedTrigger`.
    """

    params_type: ClassVar[type] = DistributedTrigger

    def __init__(self, env: ClientEnv, model: nn.Module | None = None, **params: Any) -> None:
        super().__init__(env, model)
        self.attack = DistributedTrigger(**params)
        check_classes(self.attack, env.dataset.num_classes)
        self.part = attacker_part(env.cfg, env.partition_id, self.attack.parts)
        self.trigger = self.attack.local(self.part, env.dataset.input_shape)
        interval = self.attack.single_shot_interval
        self.shot = (
            None if interval is None else single_shot_round(env.cfg, env.partition_id, interval)
        )
        end = env.cfg.attack.end_round if env.cfg.attack is not None else None
        if self.shot is not None and end is not None and self.shot > end:
            raise ValueError(
                f"single_shot_interval: client {env.partition_id} would poison in round "
                f"{self.shot}, after attack.end_round={end}"
            )

    def active(self, server_round: int) -> bool:
        """In A-S its own round only (:func:`single_shot_round`), else the attack's schedule."""
        if self.shot is None:
            return super().active(server_round)
        return server_round == self.shot

    def training_data(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """While active: the partition with its local trigger stamped on the poisoned part."""
        x, y = super().training_data(server_round)
        if not self.active(server_round):
            return x, y
        gen = torch.Generator().manual_seed(client_seed(self.env.cfg, self.partition_id, 0))
        return self.trigger.poison(x, y, gen)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """``G + boost (X - G)`` while active with a boost, else ``X``."""
        if not self.active(server_round) or self.attack.boost is None:
            return trained
        return Scaling(gamma=self.attack.boost).forge(global_weights, trained, None)

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        """The attack tags and the attacker's local trigger."""
        return {**super().fit_metrics(server_round), DBA_PART: self.part}

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """Backdoor accuracy of the global trigger and of each local trigger."""
        attack = DistributedTrigger(**cls.attack_params(cfg))
        keep = torch.ones(len(dataset.y_test), dtype=torch.bool)
        if attack.source_class is not None:
            keep &= dataset.y_test == attack.source_class
        if cfg.evaluation.backdoor_exclude_target:
            keep &= dataset.y_test != attack.target_class
        x = dataset.x_test[keep]
        size = cfg.evaluation.batch_size
        metrics = {
            "backdoor_accuracy": backdoor_metric(
                attack.global_trigger(x), attack.target_class, size
            )
        }
        for k, mask in enumerate(attack.masks(tuple(x.shape[1:]))):
            stamped = stamp(x, "custom", mask=mask, value=attack.value)
            metrics[f"backdoor_accuracy_local_{k}"] = backdoor_metric(
                stamped, attack.target_class, size
            )

        def metric(model: nn.Module) -> dict[str, float]:
            return {key: fn(model)["backdoor_accuracy"] for key, fn in metrics.items()}

        return metric
