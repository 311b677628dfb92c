"""Model replacement (Bagdasaryan et al.): a backdoored model scaled to replace the global one."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from flwr.common import NDArrays
from torch import nn

from clients.attack import attackers_per_round
from clients.backdoor import BackdoorClient, PoisonTraining
from clients.model_poisoning import check_number
from clients.pixel_trojan import PixelBackdoor
from clients.semantic_backdoor import SemanticBackdoorParams
from flsec_flower.config import ExperimentConfig, TrainingConfig
from flsec_flower.training import ExtraLoss

MODES = ("replace", "train_and_scale", "constrain_and_scale")
"""How the boost is chosen and whether training is constrained."""

ANOMALY_LOSSES = ("l2", "l2_squared", "cosine")
"""Anomaly terms ``L_ano`` of constrain-and-scale."""


def replacement_weights(global_weights: NDArrays, backdoored: NDArrays, gamma: float) -> NDArrays:
    r"""The submitted model :math:`L = G + \gamma (X - G)`.

    Bagdasaryan, Veit, Hua, Estrin & Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020. The server computes :math:`G' = G + \frac{\eta}{n}
    \sum_i (L_i - G)`; if the other clients' updates cancel (near
    convergence), :math:`\gamma = n / \eta` makes :math:`G' = X`.

    Parameters
    ----------
    global_weights : list of numpy.ndarray
        The global model ``G``.
    backdoored : list of numpy.ndarray
        The attacker's backdoored model ``X``.
    gamma : float
        The boost :math:`\gamma`.

    Returns
    -------
    list of numpy.ndarray
        ``G + gamma (X - G)`` in the dtypes of ``G`` (integers rounded).

    Examples
    --------
    >>> replacement_weights([np.array([1.0, 2.0])], [np.array([1.5, 1.0])], 10.0)[0]
    array([ 6., -8.])
    """
    out = []
    for g, x in zip(global_weights, backdoored, strict=True):
        g64 = g.astype(np.float64)
        w = g64 + gamma * (x.astype(np.float64) - g64)
        out.append((np.rint(w) if np.issubdtype(g.dtype, np.integer) else w).astype(g.dtype))
    return out


def default_boost(num_clients: int, server_lr: float, num_attackers: int = 1) -> float:
    r"""The paper's boost :math:`\gamma = n / \eta`, split among ``k`` attackers.

    :math:`\gamma = n / (\eta k)`.

    Exact for a mean with equal weights ``1/n`` over ``n`` clients and
    server learning rate :math:`\eta` (for FedAvg weighted by sample counts
    ``n_i``, the exact boost is :math:`\sum_j n_j / (\eta\, n_0)`). Bagdasaryan
    et al.'s code divides the boost by the number of attackers in the round.

    Examples
    --------
    >>> default_boost(10, 1.0), default_boost(10, 0.5, num_attackers=2)
    (10.0, 10.0)
    """
    return num_clients / (server_lr * num_attackers)


def update_norm(global_weights: NDArrays, trained: NDArrays) -> float:
    """``||X - G||_2`` over every array (the norm the server sees).

    Examples
    --------
    >>> update_norm([np.zeros(2)], [np.array([3.0, 4.0])])
    5.0
    """
    return math.sqrt(
        sum(
            float(np.sum((x.astype(np.float64) - g.astype(np.float64)) ** 2))
            for g, x in zip(global_weights, trained, strict=True)
        )
    )


@dataclass(frozen=True)
class Scaling:
    r"""Model replacement's boost as an update transform: :math:`\tilde u = \gamma u`.

    Bagdasaryan et al.'s scaling, on whatever the client trained (e.g. on a
    backdoored dataset wrapper): with ``gamma`` alone :math:`\gamma` is fixed
    (``n / eta`` replaces the global model under FedAvg, :func:`default_boost`);
    with ``norm_bound`` ``S`` as well the boost is capped so that
    :math:`\lVert \tilde u \rVert \le S`; with ``norm_bound`` alone it is
    :math:`S / \lVert u \rVert` (train-and-scale). A zero or non-finite update
    is boosted by ``gamma`` (1 without one).

    Parameters
    ----------
    gamma : float, optional
        The boost, ``> 0``.
    norm_bound : float, optional
        ``S``, the defence's norm bound, ``> 0``.

    Raises
    ------
    ValueError
        Naming the field, for values out of range or when both are missing.

    Examples
    --------
    >>> Scaling(gamma=10.0).forge([np.zeros(2)], [np.array([3.0, 4.0])], None)[0]
    array([30., 40.])
    >>> Scaling(norm_bound=1.0).boost([np.zeros(2)], [np.array([3.0, 4.0])])
    0.2
    """

    needs_training: ClassVar[bool] = True
    gamma: float | None = None
    norm_bound: float | None = None

    def __post_init__(self) -> None:
        """Check the fields."""
        if self.gamma is None and self.norm_bound is None:
            raise ValueError("gamma: give the boost gamma, the norm bound norm_bound, or both")
        if self.gamma is not None:
            check_number("gamma", self.gamma, above=0)
        if self.norm_bound is not None:
            check_number("norm_bound", self.norm_bound, above=0)

    def boost(self, global_weights: NDArrays, trained: NDArrays) -> float:
        """The boost of this update (see the class docstring)."""
        fixed = 1.0 if self.gamma is None else self.gamma
        norm = update_norm(global_weights, trained)
        if self.norm_bound is None or not 0.0 < norm < math.inf:
            return fixed
        capped = self.norm_bound / norm
        return capped if self.gamma is None else min(self.gamma, capped)

    def forge(
        self, global_weights: NDArrays, trained: NDArrays, rng: np.random.Generator | None
    ) -> NDArrays:
        """``G + boost (X - G)`` (:func:`replacement_weights`)."""
        return replacement_weights(global_weights, trained, self.boost(global_weights, trained))


def alpha_weighted(cfg: TrainingConfig, alpha: float) -> TrainingConfig:
    r"""Training settings that make the extra-loss form follow the paper's weighted loss.

    Training minimises :math:`L_{class} + \frac{1-\alpha}{\alpha} L_{ano}`
    in place of :math:`\alpha L_{class} + (1-\alpha) L_{ano}`.

    The first objective is the second divided by :math:`\alpha`, so its
    gradients are :math:`1/\alpha` times larger. SGD (with momentum) takes
    the same steps when the learning rate is multiplied by :math:`\alpha`
    and the weight decay and the gradient-clipping norm are divided by it;
    Adam is invariant to the scale of the loss (up to its ``eps``), so only
    weight decay and clipping change.

    Examples
    --------
    >>> alpha_weighted(TrainingConfig(lr=0.1, weight_decay=1e-3), 0.5).lr
    0.05
    """
    lr = cfg.lr * alpha if cfg.optimizer == "sgd" else cfg.lr
    clip = None if cfg.grad_clip is None else cfg.grad_clip / alpha
    return dataclasses.replace(cfg, lr=lr, weight_decay=cfg.weight_decay / alpha, grad_clip=clip)


def anomaly_loss(
    kind: str, reference: list[torch.Tensor], direction: list[torch.Tensor] | None = None
) -> Callable[[nn.Module], torch.Tensor]:
    r"""``L_ano(model)`` of constrain-and-scale, on the model's parameters :math:`\theta`.

    - ``l2``: :math:`\lVert \theta - G \rVert_2` (the authors' code);
    - ``l2_squared``: :math:`\lVert \theta - G \rVert_2^2`;
    - ``cosine``: :math:`1 - \cos(\theta - G, \hat u)`, with :math:`\hat u`
      the attacker's own clean update standing in for the benign direction
      (zero while :math:`\theta = G`).

    Parameters
    ----------
    kind : str
        One of :data:`ANOMALY_LOSSES`.
    reference : list of torch.Tensor
        The global model's parameters ``G``, in ``model.parameters()`` order.
    direction : list of torch.Tensor, optional
        :math:`\hat u` for ``cosine``, same layout.

    Examples
    --------
    >>> m = nn.Linear(1, 1, bias=False)
    >>> anomaly_loss("l2", [m.weight.detach() - 3.0])(m).item()
    3.0
    """
    if kind not in ANOMALY_LOSSES:
        raise ValueError(f"anomaly: got {kind!r}, allowed: {', '.join(ANOMALY_LOSSES)}")
    u = None if direction is None else torch.cat([d.flatten() for d in direction])

    def loss(model: nn.Module) -> torch.Tensor:
        diff = torch.cat(
            [(p - g).flatten() for p, g in zip(model.parameters(), reference, strict=True)]
        )
        if kind == "l2_squared":
            return diff.square().sum()
        norm = diff.norm()
        if kind == "l2":
            return norm  # type: ignore[no-any-return]  # torch's Tensor.norm is untyped
        if u is None or float(norm.detach()) == 0.0 or float(u.norm()) == 0.0:
            return diff.sum() * 0.0
        cosine: torch.Tensor = 1.0 - diff @ u / (norm * u.norm())
        return cosine

    return loss


@dataclass(frozen=True)
class Replacement:
    r"""Model replacement, train-and-scale and constrain-and-scale as an update transform.

    Bagdasaryan, Veit, Hua, Estrin & Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020. The attacker trains the backdoored model ``X``
    from the global model ``G`` on its poisoned data and submits
    :math:`G + \gamma (X - G)` (:func:`replacement_weights`):

    - ``replace``: :math:`\gamma` = ``gamma``, by default :math:`n / \eta`
      with ``n`` the clients per round and :math:`\eta` the server learning
      rate (:func:`default_boost`), divided by the attackers per round when
      ``split``;
    - ``train_and_scale``: :math:`\gamma = S / \lVert X - G \rVert` for the
      defence's known norm bound ``S = norm_bound``;
    - ``constrain_and_scale``: ``X`` minimises :math:`\alpha L_{class} + (1 -
      \alpha) L_{ano}` (:func:`anomaly_loss`, :func:`alpha_weighted`), then is
      boosted as in ``replace``.

    In ``replace`` and ``constrain_and_scale`` a given ``norm_bound`` caps
    :math:`\lVert L - G \rVert` at ``S``.

    Parameters
    ----------
    mode : str
        One of :data:`MODES`.
    gamma : float, optional
        The boost; default :func:`default_boost` (resolved by :meth:`for_run`).
    norm_bound : float, optional
        ``S``; required by ``train_and_scale``.
    alpha : float
        Weight of the classification loss in ``constrain_and_scale``, in ``(0, 1]``.
    anomaly : str
        ``L_ano``, one of :data:`ANOMALY_LOSSES`.
    split : bool
        Divide the default boost by the attackers per round
        (:func:`~clients.attack.attackers_per_round`).

    Examples
    --------
    >>> Replacement(gamma=2.0).forge([np.zeros(1)], [np.array([3.0])], None)[0]
    array([6.])
    """

    mode: str = "replace"
    gamma: float | None = None
    norm_bound: float | None = None
    alpha: float = 0.7
    anomaly: str = "l2"
    split: bool = True

    def __post_init__(self) -> None:
        """Check the fields."""
        if self.mode not in MODES:
            raise ValueError(f"mode: got {self.mode!r}, allowed: {', '.join(MODES)}")
        if self.anomaly not in ANOMALY_LOSSES:
            raise ValueError(f"anomaly: got {self.anomaly!r}, allowed: {', '.join(ANOMALY_LOSSES)}")
        gamma, bound = self.gamma, self.norm_bound
        if gamma is not None and not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma: got {gamma!r}, must be a finite number > 0")
        if bound is not None and not (math.isfinite(bound) and bound > 0):
            raise ValueError(f"norm_bound: got {bound!r}, must be a finite number > 0")
        if self.mode == "train_and_scale" and bound is None:
            raise ValueError("norm_bound: train_and_scale needs the defence's norm bound S")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha: got {self.alpha!r}, must be in (0, 1]")

    def for_run(self, cfg: ExperimentConfig) -> Replacement:
        """Return this transform with the default ``gamma`` of the run (:func:`default_boost`)."""
        if self.gamma is not None:
            return self
        if not cfg.server_lr > 0:
            raise ValueError(
                f"gamma: the default n / server_lr needs server_lr > 0, got {cfg.server_lr!r}"
            )
        attackers = attackers_per_round(cfg) if self.split else 1
        gamma = default_boost(cfg.sampled_clients, cfg.server_lr, attackers)
        return dataclasses.replace(self, gamma=gamma)

    def scaling(self) -> Scaling:
        """The boost of the mode: fixed ``gamma`` or ``S / ||X - G||`` (:class:`Scaling`)."""
        gamma = None if self.mode == "train_and_scale" else self.gamma
        return Scaling(gamma, self.norm_bound)

    def boost(self, global_weights: NDArrays, trained: NDArrays) -> float:
        """The boost of this update (:meth:`Scaling.boost`)."""
        return self.scaling().boost(global_weights, trained)

    def forge(
        self, global_weights: NDArrays, trained: NDArrays, rng: np.random.Generator | None
    ) -> NDArrays:
        """``G + boost (X - G)`` (:func:`replacement_weights`)."""
        return self.scaling().forge(global_weights, trained, rng)

    def shape_training(
        self,
        cfg: TrainingConfig,
        model: nn.Module,
        clean_update: Callable[[], list[torch.Tensor]],
    ) -> tuple[TrainingConfig, ExtraLoss | None]:
        """Constrain-and-scale: the alpha-weighted settings and ``(1-a)/a L_ano``.

        ``L_ano`` is measured from ``model``'s parameters now (the global
        model); ``clean_update()`` gives the benign direction of ``cosine``.
        The other modes train unchanged.
        """
        if self.mode != "constrain_and_scale" or self.alpha == 1.0:
            return cfg, None
        reference = [p.detach().clone() for p in model.parameters()]
        direction = clean_update() if self.anomaly == "cosine" else None
        ano = anomaly_loss(self.anomaly, reference, direction)
        weight = (1.0 - self.alpha) / self.alpha
        return alpha_weighted(cfg, self.alpha), lambda m: weight * ano(m)


class ModelReplacementClient(BackdoorClient):
    """Model replacement (:class:`Replacement`) with a pixel trigger (:class:`PixelBackdoor`).

    While active the attacker trains on its backdoor data with its own
    learning rate and epochs (:class:`~clients.backdoor.PoisonTraining`) and
    submits the boosted model; the fit metrics carry the boost as ``gamma``
    and the server reports the trigger's ``backdoor_accuracy``. A
    single-shot attack is the schedule's ``single_shot``. The parameters are
    the fields of the three parts.
    """

    update_type = Replacement
    training_type = PoisonTraining
    backdoor_type = PixelBackdoor


class SemanticModelReplacementClient(BackdoorClient):
    """Model replacement with a semantic backdoor (the paper's CIFAR-10 attack).

    :class:`Replacement`, :class:`~clients.backdoor.PoisonTraining` and
    :class:`~clients.semantic_backdoor.SemanticBackdoorParams`; the server
    reports ``backdoor_accuracy`` on the held-out backdoor images.
    """

    update_type = Replacement
    training_type = PoisonTraining
    backdoor_type = SemanticBackdoorParams
