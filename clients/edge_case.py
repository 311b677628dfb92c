r"""Edge-case backdoor: rare examples of a class, from the tail of its distribution, relabelled."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.common import NDArrays, Scalar
from torch import nn

from clients.attack import AttackClient
from clients.model_poisoning import check_number
from clients.model_replacement import update_norm
from clients.pixel_trojan import backdoor_metric
from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv
from flsec_flower.seeds import Stream, numpy_rng

EDGE_CASE_NORM = "edge_case_update_norm"
"""Fit-metrics key: the norm of the update the attacker sent."""


def tail_examples(
    x: torch.Tensor, y: torch.Tensor, source_class: int, fraction: float
) -> torch.Tensor:
    r"""Indices of the ``source_class`` examples farthest from their class mean, farthest first.

    The edge-case set of Wang et al. lies where :math:`p_X(x)` is small. With
    the class fitted by an isotropic Gaussian around its mean :math:`\mu_c =
    \frac{1}{n_c} \sum_{y_i = c} x_i`, the density falls with
    :math:`\lVert x_i - \mu_c \rVert_2`, so the tail is the
    :math:`\max(2, \lceil \mathrm{fraction} \cdot n_c \rceil)` examples with
    the largest distance (ties by position).

    Parameters
    ----------
    x, y : torch.Tensor
        Training inputs and labels.
    source_class : int
        The class whose tail is taken.
    fraction : float
        Share of the class taken, in ``(0, 1]``.

    Returns
    -------
    torch.Tensor
        int64 indices into ``x``.

    Raises
    ------
    ValueError
        If the class has fewer than two examples.

    Examples
    --------
    >>> x = torch.tensor([[0.0], [1.0], [9.0], [5.0], [2.0]])
    >>> tail_examples(x, torch.tensor([0, 0, 1, 0, 0]), 0, 0.5).tolist()
    [3, 0]
    """
    members = torch.nonzero(y.cpu() == source_class).flatten()
    if len(members) < 2:
        raise ValueError(
            f"source_class: class {source_class} has {len(members)} training example(s); "
            "the edge-case set needs at least 2"
        )
    xs = x.cpu()[members].flatten(1).double()
    distance = (xs - xs.mean(0)).norm(dim=1)
    k = min(len(members), max(2, math.ceil(fraction * len(members))))
    order = torch.sort(-distance, stable=True).indices
    return members[order[:k]]


@dataclass(frozen=True)
class NormBallProjection:
    r"""Projection of the update onto the ball :math:`\lVert u \rVert_2 \le \varepsilon`.

    :math:`\tilde u = u \min(1, \varepsilon / \lVert u \rVert_2)`: Wang et
    al.'s projected gradient descent against norm-bounding defences (it
    never scales an update up, unlike train-and-scale's
    :class:`~clients.model_replacement.Scaling`). A non-finite update is
    sent as the global model (a zero update).

    Parameters
    ----------
    radius : float
        :math:`\varepsilon > 0`, e.g. the defence's norm bound.

    Examples
    --------
    >>> NormBallProjection(1.0).forge([np.zeros(2)], [np.array([3.0, 4.0])], None)[0]
    array([0.6, 0.8])
    """

    needs_training: ClassVar[bool] = True
    radius: float

    def __post_init__(self) -> None:
        """Check the radius."""
        check_number("radius", self.radius, above=0)

    def forge(
        self, global_weights: NDArrays, trained: NDArrays, rng: np.random.Generator | None
    ) -> NDArrays:
        """``G + u min(1, radius / ||u||)``, in the dtypes of ``G``."""
        norm = update_norm(global_weights, trained)
        if not math.isfinite(norm):
            return [np.array(g, copy=True) for g in global_weights]
        if norm <= self.radius:
            return trained
        factor = self.radius / norm
        return [
            (np.asarray(g, np.float64) + factor * (np.asarray(x, np.float64) - g)).astype(g.dtype)
            if np.issubdtype(np.asarray(g).dtype, np.floating)
            else x
            for g, x in zip(global_weights, trained, strict=True)
        ]


@contextmanager
def projected_steps(model: nn.Module, radius: float) -> Iterator[None]:
    r"""Inside the block, before every forward pass, project the parameters onto the ball.

    The ball is :math:`\lVert \theta - \theta_0 \rVert_2 \le` ``radius``
    around the parameters :math:`\theta_0` at entry: with a forward pass per
    mini-batch this is projected gradient descent.
    """
    start = [p.detach().clone() for p in model.parameters()]

    def project(module: nn.Module, args: Any) -> None:
        with torch.no_grad():
            params = list(model.parameters())
            pairs = list(zip(params, start, strict=True))
            norm = math.sqrt(sum(float((p - s).square().sum()) for p, s in pairs))
            if norm > radius:
                for p, s in pairs:
                    p.copy_(s + (p - s) * (radius / norm))

    handle = model.register_forward_pre_hook(project)
    try:
        yield
    finally:
        handle.remove()


@dataclass(frozen=True)
class EdgeCaseBackdoor:
    """Parameters of :class:`EdgeCaseClient`.

    Parameters
    ----------
    source_class : int
        The class whose tail is taken (7: the paper's ARDIS sevens on MNIST).
    target_class : int
        The label the tail is given (1, as in the paper).
    tail_fraction : float
        Share of ``source_class`` taken as the edge-case set (:func:`tail_examples`), in ``(0, 1]``.
    test_fraction : float
        Share of the edge-case set held out as the backdoor test set, in ``(0, 1)``
        (a seeded draw; at least one example on each side).
    pgd_radius : float, optional
        Projected gradient descent: keep the model within this L2 distance of
        the global model at every step and in the sent update
        (:func:`projected_steps`, :class:`NormBallProjection`).
    exclusive : bool
        Keep the edge-case set out of every honest partition (the paper's
        edge cases come from another source, ARDIS or Southwest airplanes).
    """

    source_class: int = 7
    target_class: int = 1
    tail_fraction: float = 0.1
    test_fraction: float = 0.4
    pgd_radius: float | None = None
    exclusive: bool = True

    def __post_init__(self) -> None:
        """Check the fields that do not depend on the data."""
        for name in ("source_class", "target_class"):
            label = getattr(self, name)
            if isinstance(label, bool) or not (isinstance(label, int) and label >= 0):
                raise ValueError(f"{name}: got {label!r}, must be a class >= 0")
        if self.source_class == self.target_class:
            raise ValueError(f"target_class: got {self.target_class!r}, the source class itself")
        if not 0.0 < self.tail_fraction <= 1.0:
            raise ValueError(f"tail_fraction: got {self.tail_fraction!r}, must be in (0, 1]")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction: got {self.test_fraction!r}, must be in (0, 1)")
        if self.pgd_radius is not None:
            check_number("pgd_radius", self.pgd_radius, above=0)

    def split(self, dataset: Dataset, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(train_ids, test_ids)``: the edge-case set split by a draw seeded by ``seed`` alone."""
        if self.source_class >= dataset.num_classes or self.target_class >= dataset.num_classes:
            raise ValueError(
                f"source_class, target_class: got {self.source_class}, {self.target_class}; "
                f"classes are 0..{dataset.num_classes - 1}"
            )
        tail = tail_examples(
            dataset.x_train, dataset.y_train, self.source_class, self.tail_fraction
        )
        order = torch.from_numpy(numpy_rng(seed, Stream.EDGE_CASES).permutation(len(tail)))
        n_test = min(max(round(self.test_fraction * len(tail)), 1), len(tail) - 1)
        return tail[order[n_test:]], tail[order[:n_test]]


class EdgeCaseClient(AttackClient):
    r"""Edge-case backdoor (Wang et al., NeurIPS 2020), with optional PGD.

    Wang, Sreenivasan, Rajput, Vishwakarma, Agarwal, Sohn, Lee &
    Papailiopoulos, "Attack of the Tails: Yes, You Really Can Backdoor
    Federated Learning", NeurIPS 2020. The paper's edge cases come from
    outside the training distribution (ARDIS sevens for MNIST, Southwest
    airplanes for CIFAR-10); none are stored here, so the edge-case set is
    built from the data that is: the ``tail_fraction`` of ``source_class``
    farthest from the class mean (:func:`tail_examples`), split into a
    training part and a held-out part (:meth:`EdgeCaseBackdoor.split`). With
    ``exclusive`` no honest client holds them.

    While active the attacker trains on its partition plus the training part
    labelled ``target_class`` (the paper mixes edge cases with clean data);
    with ``pgd_radius`` :math:`\varepsilon` every step is projected onto
    :math:`\lVert w - G \rVert \le \varepsilon` and so is the sent update.
    The server reports ``backdoor_accuracy``: the share of the held-out
    edge cases the global model labels ``target_class``.

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    **params
        The fields of :class:`EdgeCaseBackdoor`.
    """

    params_type: ClassVar[type] = EdgeCaseBackdoor
    client_mod: ClassVar[str] = "norm_projection"
    """The Message-API face of PGD's projection (``attack_mod("norm_projection", radius=...)``)."""

    def __init__(self, env: ClientEnv, model: nn.Module | None = None, **params: Any) -> None:
        super().__init__(env, model)
        self.params = EdgeCaseBackdoor(**params)
        train_ids, _ = self.params.split(env.dataset, env.cfg.seed)
        self.edge_x = env.dataset.x_train[train_ids].to(env.device)
        self.projection = (
            None if self.params.pgd_radius is None else NormBallProjection(self.params.pgd_radius)
        )
        self.sent_norm: float | None = None

    def training_data(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """While active: the partition plus the edge cases labelled ``target_class``."""
        x, y = super().training_data(server_round)
        if not self.active(server_round):
            return x, y
        labels = torch.full((len(self.edge_x),), self.params.target_class, device=y.device)
        return torch.cat([x, self.edge_x]), torch.cat([y, labels])

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """Train; while active with ``pgd_radius``, with every step projected."""
        if self.projection is None or not self.active(server_round):
            return super().train(x, y, server_round)
        with projected_steps(self.model, self.projection.radius):
            return super().train(x, y, server_round)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """While active with ``pgd_radius``, the update projected onto the ball; else ``X``."""
        if not self.active(server_round):
            self.sent_norm = None
            return trained
        if self.projection is not None:
            trained = self.projection.forge(global_weights, trained, None)
        self.sent_norm = update_norm(global_weights, trained)
        return trained

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        """The attack tags and, while active, the sent update's norm."""
        metrics = super().fit_metrics(server_round)
        if self.sent_norm is not None:
            metrics[EDGE_CASE_NORM] = self.sent_norm
        return metrics

    @classmethod
    def reserved_indices(cls, cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
        """With ``exclusive`` (default): the whole edge-case set."""
        params = EdgeCaseBackdoor(**cls.attack_params(cfg))
        if not params.exclusive:
            return None
        return torch.cat(params.split(dataset, cfg.seed)).numpy()

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """``backdoor_accuracy`` of the global model on the held-out edge cases."""
        params = EdgeCaseBackdoor(**cls.attack_params(cfg))
        _, test_ids = params.split(dataset, cfg.seed)
        return backdoor_metric(
            dataset.x_train[test_ids], params.target_class, cfg.evaluation.batch_size
        )
