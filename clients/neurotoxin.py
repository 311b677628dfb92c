r"""Neurotoxin: a backdoor confined to the coordinates benign training changes least."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.common import Config, NDArrays, Scalar
from torch import nn

from clients.attack import AttackClient, check_classes
from clients.pixel_trojan import PixelTrigger, backdoor_metric
from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed

PREVIOUS_GLOBAL = "neurotoxin_previous_global"
"""Name of the last global model the attacker saw, in its :class:`ClientState`."""

KEPT_FRACTION = "neurotoxin_kept"
"""Fit-metrics key: the fraction of coordinates the attacker's update may use."""


def bottom_k_mask(change: NDArrays, ratio: float) -> list[np.ndarray]:
    r"""The ``floor(ratio * d)`` coordinates with the smallest :math:`|\Delta|`, over all arrays.

    The ``d`` coordinates of every array are ranked together by
    :math:`|\Delta_j|` (ties by position: a stable sort), and the smallest
    ``floor(ratio * d)`` are kept (``True``). A non-finite :math:`\Delta_j`
    ranks as the largest.

    Parameters
    ----------
    change : list of numpy.ndarray
        :math:`\Delta`, e.g. the last change of the global model.
    ratio : float
        Fraction of coordinates kept, in ``[0, 1]``.

    Returns
    -------
    list of numpy.ndarray
        Boolean masks, shaped as ``change``.

    Examples
    --------
    >>> bottom_k_mask([np.array([0.5, -0.1]), np.array([0.0, 2.0])], 0.5)
    [array([False,  True]), array([ True, False])]
    """
    flat = np.concatenate([np.abs(np.asarray(c, np.float64)).ravel() for c in change])
    flat = np.where(np.isfinite(flat), flat, np.inf)
    keep = np.zeros(flat.size, dtype=bool)
    keep[np.argsort(flat, kind="stable")[: math.floor(ratio * flat.size)]] = True
    masks, start = [], 0
    for c in change:
        size = np.asarray(c).size
        masks.append(keep[start : start + size].reshape(np.shape(c)))
        start += size
    return masks


@dataclass(frozen=True)
class Neurotoxin:
    r"""Neurotoxin's update transform (Zhang et al., ICML 2022).

    Zhang, Panda, Song, Yang, Mahoney, Gonzalez, Ramchandran & Mittal,
    "Neurotoxin: Durable Backdoors in Federated Learning", ICML 2022. Benign
    clients mostly move the coordinates with the largest updates; the
    attacker estimates the benign update by the last change of the global
    model, :math:`\Delta = G_t - G_{t-1}`, keeps the ``mask_ratio`` share of
    coordinates with the smallest :math:`|\Delta|` (:func:`bottom_k_mask`,
    over all layers together, the authors' ``aggregate_all_layer``) and
    restricts its update to them: :math:`\tilde u = m \odot u`. The client
    also masks every local step's gradient (the authors' ``apply_grad_mask``,
    their per-step projection); the final projection keeps the update in the
    mask whatever the optimiser adds (weight decay, momentum).

    Parameters
    ----------
    mask_ratio : float
        Share of coordinates kept, in ``(0, 1]`` (0.95: the authors'
        ``gradmask_ratio``, the top 5% excluded; 1.0 is the plain backdoor).

    Examples
    --------
    >>> nt = Neurotoxin(mask_ratio=0.5)
    >>> m = nt.mask([np.zeros(4)], [np.array([0.5, -0.1, 0.0, 2.0])])
    >>> nt.project([np.zeros(4)], [np.ones(4)], m)[0]
    array([0., 1., 1., 0.])
    """

    needs_training: ClassVar[bool] = True
    mask_ratio: float = 0.95

    def __post_init__(self) -> None:
        """Check the ratio."""
        ok = isinstance(self.mask_ratio, int | float) and not isinstance(self.mask_ratio, bool)
        if not (ok and 0.0 < self.mask_ratio <= 1.0):
            raise ValueError(f"mask_ratio: got {self.mask_ratio!r}, must be in (0, 1]")

    def mask(self, previous_global: NDArrays, global_weights: NDArrays) -> list[np.ndarray]:
        r"""The kept coordinates: bottom ``mask_ratio`` of :math:`|G_t - G_{t-1}|`."""
        change = [
            np.asarray(g, np.float64) - np.asarray(p, np.float64)
            for p, g in zip(previous_global, global_weights, strict=True)
        ]
        return bottom_k_mask(change, self.mask_ratio)

    def project(
        self, global_weights: NDArrays, trained: NDArrays, mask: list[np.ndarray]
    ) -> NDArrays:
        r"""``G + m * (X - G)``: the trained model with its update zeroed outside the mask."""
        return [
            np.where(m, x, g).astype(np.asarray(g).dtype)
            for g, x, m in zip(global_weights, trained, mask, strict=True)
        ]


@contextmanager
def masked_gradients(model: nn.Module, mask: dict[str, np.ndarray]) -> Iterator[None]:
    """Inside the block every gradient of ``model``'s parameters is multiplied by its mask.

    ``mask`` maps state-dict names to boolean arrays; parameters without an
    entry are left alone.
    """
    handles = []
    for name, p in model.named_parameters():
        if name in mask:
            m = torch.as_tensor(mask[name], device=p.device, dtype=p.dtype)
            handles.append(p.register_hook(lambda g, m=m: g * m))  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class NeurotoxinBackdoor:
    """Parameters of :class:`NeurotoxinClient`: a pixel trigger and Neurotoxin's mask.

    ``target_class`` .. ``poison_fraction`` are those of
    :class:`~clients.pixel_trojan.PixelTrigger`; ``mask_ratio`` that of
    :class:`Neurotoxin`.
    """

    target_class: int = 7
    pattern: str = "plus"
    trigger_size: int | None = None
    offset: list[int] | None = None
    mask: list[list[int]] | None = None
    value: float = 1.0
    source_class: int | None = None
    poison_fraction: float = 0.5
    mask_ratio: float = 0.95

    def trigger(self) -> PixelTrigger:
        """The data poisoning."""
        fields = {k: v for k, v in vars(self).items() if k != "mask_ratio"}
        return PixelTrigger(**fields)

    def neurotoxin(self) -> Neurotoxin:
        """The update transform."""
        return Neurotoxin(self.mask_ratio)


class NeurotoxinClient(AttackClient):
    r"""Neurotoxin (Zhang et al., ICML 2022) with a pixel-trigger backdoor.

    The attacker stores the global model it receives in every round (its
    :class:`~flsec_flower.client_state.ClientState`, else on the client
    object). While active it trains on its data with the trigger of
    :class:`~clients.pixel_trojan.PixelTrigger` stamped on ``poison_fraction``
    of the eligible samples (relabelled ``target_class``), with every
    gradient masked to the coordinates :class:`Neurotoxin` keeps for
    :math:`G_t - G_{t-1}`, and sends :math:`G_t + m \odot (X - G_t)`. With no
    earlier global model (its first round) nothing is masked. The fit
    metrics carry the kept share as ``neurotoxin_kept``; the server reports
    the trigger's ``backdoor_accuracy`` (as for ``pixel_trojan``).

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    **params
        The fields of :class:`NeurotoxinBackdoor`.
    """

    params_type: ClassVar[type] = NeurotoxinBackdoor
    client_mod: ClassVar[str] = "neurotoxin_mod"
    """The Message-API face of the update transform (:func:`clients.mods.neurotoxin_mod`)."""

    def __init__(self, env: ClientEnv, model: nn.Module | None = None, **params: Any) -> None:
        super().__init__(env, model)
        self.params = NeurotoxinBackdoor(**params)
        check_classes(self.params, env.dataset.num_classes)
        self.trigger = self.params.trigger()
        self.trigger.stamp(env.x[:1])
        self.neurotoxin = self.params.neurotoxin()
        self.global_weights: NDArrays = []
        self.previous: NDArrays | None = None
        self.round_mask: list[np.ndarray] | None = None
        self.kept: float | None = None

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Remember ``parameters`` as this round's global model, then fit."""
        self.global_weights = [np.array(a) for a in parameters]
        return super().fit(parameters, config)

    def _previous_global(self, server_round: int) -> NDArrays | None:
        if self.state is not None:
            return self.state.load(PREVIOUS_GLOBAL, server_round, self.checkpoint_dir)
        return self.previous

    def _remember(self, server_round: int) -> None:
        if self.state is not None:
            self.state.save(PREVIOUS_GLOBAL, self.global_weights, server_round, self.checkpoint_dir)
        self.previous = self.global_weights

    def training_data(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """While active: the partition with its poisoned part stamped and relabelled."""
        x, y = super().training_data(server_round)
        if not self.active(server_round):
            return x, y
        gen = torch.Generator().manual_seed(client_seed(self.env.cfg, self.partition_id, 0))
        return self.trigger.poison(x, y, gen)

    def current_mask(self, server_round: int) -> list[np.ndarray] | None:
        """The mask of this round; ``None`` without an earlier global model of the same shapes."""
        previous = self._previous_global(server_round)
        if previous is None or [p.shape for p in previous] != [
            g.shape for g in self.global_weights
        ]:
            return None
        return self.neurotoxin.mask(previous, self.global_weights)

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """Train; while active, with every gradient masked (:func:`masked_gradients`)."""
        self.round_mask = self.current_mask(server_round) if self.active(server_round) else None
        self._remember(server_round)
        if self.round_mask is None:
            return super().train(x, y, server_round)
        names = list(self.model.state_dict().keys())
        with masked_gradients(self.model, dict(zip(names, self.round_mask, strict=True))):
            return super().train(x, y, server_round)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """``G + m * (X - G)`` while active with a mask, else ``X``."""
        if self.round_mask is None:
            self.kept = 1.0 if self.active(server_round) else None
            return trained
        self.kept = float(
            sum(m.sum() for m in self.round_mask) / sum(m.size for m in self.round_mask)
        )
        return self.neurotoxin.project(global_weights, trained, self.round_mask)

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        """The attack tags and, while active, the kept share of coordinates."""
        metrics = super().fit_metrics(server_round)
        if self.kept is not None:
            metrics[KEPT_FRACTION] = self.kept
        return metrics

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """``backdoor_accuracy`` of the global model on stamped test images."""
        params = NeurotoxinBackdoor(**cls.attack_params(cfg))
        keep = torch.ones(len(dataset.y_test), dtype=torch.bool)
        if params.source_class is not None:
            keep &= dataset.y_test == params.source_class
        if cfg.evaluation.backdoor_exclude_target:
            keep &= dataset.y_test != params.target_class
        x = params.trigger().stamp(dataset.x_test[keep])
        return backdoor_metric(x, params.target_class, cfg.evaluation.batch_size)
