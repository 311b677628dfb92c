r"""Alternating minimisation (Bhagoji et al., ICML 2019): targeted poisoning kept stealthy."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.common import Scalar
from torch import nn

from clients.attack import AttackClient, check_classes
from clients.model_poisoning import check_number
from clients.pixel_trojan import backdoor_metric
from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed
from flsec_flower.seeds import BatchStream, Stream, numpy_rng
from flsec_flower.training import for_round, train_local

ALTER_MIN_DISTANCE = "alter_min_distance"
r"""Fit-metrics key: :math:`\lVert \delta - \bar\delta_{ben} \rVert_2` of the sent update."""


def targeted_examples(
    y_train: torch.Tensor, seed: int, source_class: int | None, count: int
) -> torch.Tensor:
    """Training-set indices of the examples the attacker wants misclassified.

    ``count`` examples (of ``source_class``, or of any class), drawn
    uniformly with a generator seeded by the run's seed alone, so the server
    and the attacker draw the same ones.

    Examples
    --------
    >>> ids = targeted_examples(torch.tensor([0, 1, 1, 0, 1]), 0, 1, 2)
    >>> sorted(set(ids.tolist()) & {1, 2, 4}) == sorted(ids.tolist())
    True
    """
    labels = y_train.cpu().numpy()
    pool = (
        np.arange(len(labels)) if source_class is None else np.flatnonzero(labels == source_class)
    )
    if not 1 <= count <= len(pool):
        raise ValueError(
            f"count: got {count!r}; the training set has {len(pool)} eligible examples"
            + ("" if source_class is None else f" of class {source_class}")
        )
    rng = numpy_rng(seed, Stream.TARGETED_EXAMPLES)
    return torch.as_tensor(np.sort(rng.choice(pool, size=count, replace=False)), dtype=torch.long)


def distance_to(
    reference: list[torch.Tensor], benign: list[torch.Tensor]
) -> Callable[[nn.Module], torch.Tensor]:
    r"""``loss(model)`` = :math:`\lVert (\theta - G) - \bar\delta_{ben} \rVert_2`.

    ``reference`` is ``G`` and ``benign`` :math:`\bar\delta_{ben}`, both in
    ``model.parameters()`` order.

    Examples
    --------
    >>> m = nn.Linear(1, 1, bias=False)
    >>> g = [m.weight.detach() - 3.0]
    >>> distance_to(g, [torch.full((1, 1), 3.0)])(m).item()
    0.0
    """

    def loss(model: nn.Module) -> torch.Tensor:
        diff = torch.cat(
            [
                (p - g - b).flatten()
                for p, g, b in zip(model.parameters(), reference, benign, strict=True)
            ]
        )
        norm: torch.Tensor = torch.linalg.vector_norm(diff)
        return norm

    return loss


@dataclass(frozen=True)
class AlterMin:
    r"""Parameters of alternating minimisation with explicit boosting.

    Parameters
    ----------
    target_class : int
        The label the targeted examples should get.
    source_class : int, optional
        Class the targeted examples are drawn from (``None``: any class).
    count : int
        Number of targeted examples ``r`` (the paper uses 1 and 10).
    boost : float, optional
        :math:`\lambda`, the explicit boost of the malicious step; by default
        the clients per round ``K`` (:math:`1/\alpha_m` for equal weights).
    rho : float
        :math:`\rho \ge 0`, weight of the distance to the benign update in
        the stealth objective.
    malicious_steps : int
        Gradient steps on the malicious objective per epoch (>= 1).
    exclusive : bool
        Keep the targeted examples out of every honest partition.
    """

    target_class: int = 0
    source_class: int | None = 5
    count: int = 10
    boost: float | None = None
    rho: float = 1e-4
    malicious_steps: int = 10
    exclusive: bool = True

    def __post_init__(self) -> None:
        """Check the fields that do not depend on the data."""
        if isinstance(self.target_class, bool) or not (
            isinstance(self.target_class, int) and self.target_class >= 0
        ):
            raise ValueError(f"target_class: got {self.target_class!r}, must be a class >= 0")
        if self.boost is not None:
            check_number("boost", self.boost, above=0)
        check_number("rho", self.rho, at_least=0)
        if not (isinstance(self.malicious_steps, int) and self.malicious_steps >= 1):
            raise ValueError(f"malicious_steps: got {self.malicious_steps!r}, must be >= 1")


class AlterMinClient(AttackClient):
    r"""Alternating minimisation with explicit boosting (Bhagoji et al., ICML 2019).

    Bhagoji, Chakraborty, Mittal & Calo, "Analyzing Federated Learning
    through an Adversarial Lens", ICML 2019, Algorithm 1. The attacker wants
    ``count`` examples (:func:`targeted_examples`) labelled ``target_class``
    while passing two stealth checks: validation accuracy, and the distance
    of its update to the benign ones. While active, starting from the global
    model ``G``, it first estimates the benign update
    :math:`\bar\delta_{ben}` (one honest local training on its own clean
    data), then in each of its local epochs

    1. takes ``malicious_steps`` steps on the malicious objective
       (cross-entropy of the targeted examples with the target label) from
       :math:`w`, giving :math:`\tilde w`, and boosts only that step:
       :math:`w \leftarrow w + \lambda (\tilde w - w)`;
    2. trains one epoch on the stealth objective from there:
       :math:`L(w; D_m) + \rho \lVert (w - G) - \bar\delta_{ben} \rVert_2`.

    It sends :math:`w` as trained (the boost is already inside). The fit
    metrics carry ``alter_min_distance``; the server reports
    ``backdoor_accuracy``, the share of the targeted examples the global
    model labels ``target_class``.

    Simplifications: the paper's :math:`\bar\delta_{ben}` is the mean benign
    update, which the attacker estimates from the previous global update;
    here it is the attacker's own honest update of this round. The paper's
    malicious steps continue until the targeted examples are misclassified
    with high confidence; here there are ``malicious_steps`` of them.

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    **params
        The fields of :class:`AlterMin`.
    """

    params_type: ClassVar[type] = AlterMin

    def __init__(self, env: ClientEnv, model: nn.Module | None = None, **params: Any) -> None:
        super().__init__(env, model)
        self.params = AlterMin(**params)
        check_classes(self.params, env.dataset.num_classes)
        ids = targeted_examples(
            env.dataset.y_train, env.cfg.seed, self.params.source_class, self.params.count
        )
        self.x_mal = env.dataset.x_train[ids].to(env.device)
        self.y_mal = torch.full((len(ids),), self.params.target_class, device=env.device)
        self.boost = float(
            env.cfg.sampled_clients if self.params.boost is None else self.params.boost
        )
        self.distance: float | None = None

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """Honest training when inactive; alternating minimisation when active."""
        self.distance = None
        if not self.active(server_round):
            return super().train(x, y, server_round)
        cfg = for_round(self.training_config(server_round), max(1, server_round))
        seed = client_seed(self.env.cfg, self.partition_id, server_round)
        gen = torch.Generator().manual_seed(seed + BatchStream.REPLACEMENT)
        params = list(self.model.parameters())
        start = {k: v.clone() for k, v in self.model.state_dict().items()}
        reference = [p.detach().clone() for p in params]
        train_local(self.model, x, y, cfg, gen, epochs=1)
        benign = [p.detach() - g for p, g in zip(params, reference, strict=True)]
        self.model.load_state_dict(start)
        stealth = distance_to(reference, benign)
        rho = self.params.rho
        extra = None if rho == 0 else (lambda m: rho * stealth(m))
        losses = []
        for _ in range(cfg.local_epochs):
            before = [p.detach().clone() for p in params]
            train_local(
                self.model, self.x_mal, self.y_mal, cfg, gen, max_steps=self.params.malicious_steps
            )
            with torch.no_grad():
                for p, b in zip(params, before, strict=True):
                    p.copy_(b + self.boost * (p - b))
            losses.append(train_local(self.model, x, y, cfg, gen, extra_loss=extra, epochs=1))
        self.distance = float(stealth(self.model).detach())
        return float(np.mean(losses))

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        """The attack tags and, while active, the distance to the benign update."""
        metrics = super().fit_metrics(server_round)
        if self.distance is not None:
            metrics[ALTER_MIN_DISTANCE] = self.distance
        return metrics

    @classmethod
    def _targets(cls, cfg: ExperimentConfig, dataset: Dataset) -> tuple[AlterMin, torch.Tensor]:
        params = AlterMin(**cls.attack_params(cfg))
        return params, targeted_examples(
            dataset.y_train, cfg.seed, params.source_class, params.count
        )

    @classmethod
    def reserved_indices(cls, cfg: ExperimentConfig, dataset: Dataset) -> np.ndarray | None:
        """With ``exclusive`` (default): the targeted examples."""
        params, ids = cls._targets(cfg, dataset)
        return ids.numpy() if params.exclusive else None

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """``backdoor_accuracy``: the share of the targeted examples labelled ``target_class``."""
        params, ids = cls._targets(cfg, dataset)
        if cfg.evaluation.backdoor_exclude_target:
            ids = ids[dataset.y_train[ids] != params.target_class]
        return backdoor_metric(dataset.x_train[ids], params.target_class, cfg.evaluation.batch_size)
