"""Model replacement (Bagdasaryan et al.): a backdoored model scaled to replace the global one."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.common import NDArrays, Scalar
from torch import nn

from clients.attack import attackers_per_round
from clients.model_poisoning import check_number
from clients.naive_poisoning import PoisonedTraining
from clients.pixel_trojan import PixelTrojanClient
from clients.semantic_backdoor import SemanticBackdoorClient
from flsec_flower.config import TrainingConfig
from flsec_flower.experiment import ClientEnv, client_seed
from flsec_flower.seeds import BatchStream
from flsec_flower.training import for_round, train_local
from flsec_flower.wire import MODEL_REPLACEMENT_GAMMA

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


class ModelReplacement(PoisonedTraining):
    r"""Model replacement, train-and-scale and constrain-and-scale (Bagdasaryan et al. 2020).

    Bagdasaryan, Veit, Hua, Estrin & Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020. While active, the attacker trains the backdoored
    model ``X`` from the global model ``G`` on its poisoned data (with
    :class:`~clients.naive_poisoning.PoisonedTraining`'s learning rate and
    epochs) and submits :math:`G + \gamma (X - G)` (:func:`replacement_weights`):

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
    :math:`\lVert L - G \rVert` at ``S``. A single-shot attack is the
    schedule's ``single_shot``. The fit metrics carry the boost as ``gamma``.

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    mode : str
        One of :data:`MODES`.
    gamma : float, optional
        The boost; default :func:`default_boost`.
    norm_bound : float, optional
        ``S``; required by ``train_and_scale``.
    alpha : float
        Weight of the classification loss in ``constrain_and_scale``, in ``(0, 1]``.
    anomaly : str
        ``L_ano``, one of :data:`ANOMALY_LOSSES`.
    split : bool
        Divide the default boost by the attackers per round
        (:func:`~clients.attack.attackers_per_round`).
    **poisoning
        Parameters of :class:`~clients.naive_poisoning.PoisonedTraining` and
        of the backdoor client.
    """

    def __init__(
        self,
        env: ClientEnv,
        model: nn.Module | None = None,
        *,
        mode: str = "replace",
        gamma: float | None = None,
        norm_bound: float | None = None,
        alpha: float = 0.7,
        anomaly: str = "l2",
        split: bool = True,
        **poisoning: Any,
    ) -> None:
        super().__init__(env, model, **poisoning)
        if mode not in MODES:
            raise ValueError(f"mode: got {mode!r}, allowed: {', '.join(MODES)}")
        if anomaly not in ANOMALY_LOSSES:
            raise ValueError(f"anomaly: got {anomaly!r}, allowed: {', '.join(ANOMALY_LOSSES)}")
        if gamma is not None and not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma: got {gamma!r}, must be a finite number > 0")
        if norm_bound is not None and not (math.isfinite(norm_bound) and norm_bound > 0):
            raise ValueError(f"norm_bound: got {norm_bound!r}, must be a finite number > 0")
        if mode == "train_and_scale" and norm_bound is None:
            raise ValueError("norm_bound: train_and_scale needs the defence's norm bound S")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha: got {alpha!r}, must be in (0, 1]")
        cfg = env.cfg
        if gamma is None and not cfg.server_lr > 0:
            raise ValueError(
                f"gamma: the default n / server_lr needs server_lr > 0, got {cfg.server_lr!r}"
            )
        attackers = attackers_per_round(cfg) if split else 1
        self.mode = mode
        self.gamma = (
            default_boost(cfg.sampled_clients, cfg.server_lr, attackers) if gamma is None else gamma
        )
        self.norm_bound = norm_bound
        self.alpha = alpha
        self.anomaly = anomaly
        self.last_gamma: float | None = None

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """Constrain-and-scale while active adds ``L_ano``; otherwise as the base."""
        if not self.active(server_round) or self.mode != "constrain_and_scale" or self.alpha == 1.0:
            return super().train(x, y, server_round)
        reference = [p.detach().clone() for p in self.model.parameters()]
        direction = self._clean_update(server_round) if self.anomaly == "cosine" else None
        ano = anomaly_loss(self.anomaly, reference, direction)
        weight = (1.0 - self.alpha) / self.alpha
        cfg = alpha_weighted(self.poison_config(), self.alpha)
        return self.train_poisoned(x, y, server_round, cfg, lambda m: weight * ano(m))

    def _clean_update(self, server_round: int) -> list[torch.Tensor]:
        """The attacker's honest update from the current model; the model is restored."""
        state = {k: v.clone() for k, v in self.model.state_dict().items()}
        before = [p.detach().clone() for p in self.model.parameters()]
        gen = torch.Generator().manual_seed(
            client_seed(self.env.cfg, self.partition_id, server_round) + BatchStream.REPLACEMENT
        )
        honest = for_round(self.env.cfg.training, max(1, server_round))
        train_local(self.model, self.env.x, self.env.y, honest, gen)
        update = [p.detach() - b for p, b in zip(self.model.parameters(), before, strict=True)]
        self.model.load_state_dict(state)
        return update

    def boost(self, global_weights: NDArrays, trained: NDArrays) -> float:
        """The boost of this round's mode (:meth:`Scaling.boost`; see the class docstring)."""
        gamma = None if self.mode == "train_and_scale" else self.gamma
        return Scaling(gamma, self.norm_bound).boost(global_weights, trained)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """``G + gamma (X - G)`` while active, else ``X``."""
        if not self.active(server_round):
            self.last_gamma = None
            return trained
        self.last_gamma = self.boost(global_weights, trained)
        return replacement_weights(global_weights, trained, self.last_gamma)

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        """The attack tags, and the boost ``gamma`` while active."""
        metrics = super().fit_metrics(server_round)
        if self.last_gamma is not None:
            metrics[MODEL_REPLACEMENT_GAMMA] = self.last_gamma
        return metrics


class ModelReplacementClient(ModelReplacement, PixelTrojanClient):
    """:class:`ModelReplacement` with a pixel trigger.

    The parameters are those of :class:`ModelReplacement`,
    :class:`~clients.naive_poisoning.PoisonedTraining` and
    :class:`~clients.pixel_trojan.PixelTrojanClient`; the server reports the
    trigger's ``backdoor_accuracy``.
    """


class SemanticModelReplacementClient(ModelReplacement, SemanticBackdoorClient):
    """:class:`ModelReplacement` with a semantic backdoor (the paper's CIFAR-10 attack).

    The parameters are those of :class:`ModelReplacement`,
    :class:`~clients.naive_poisoning.PoisonedTraining` and
    :class:`~clients.semantic_backdoor.SemanticBackdoorClient`; the server
    reports ``backdoor_accuracy`` on the held-out backdoor images.
    """
