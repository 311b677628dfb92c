"""Class backdoor: one class relabelled as another, the update boosted (DiverseFL's backdoor)."""

from __future__ import annotations

import math

import torch
from flwr.common import NDArrays
from torch import nn

from clients.label_flip import LabelFlipClient
from clients.model_replacement import replacement_weights
from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv
from flsec_flower.training import predict


def class_backdoor_metric(
    x: torch.Tensor, y: torch.Tensor, source: int, target: int, batch_size: int = 1024
) -> ServerMetric:
    r"""``metric(model) -> {"backdoor_accuracy": b, "main_accuracy": a}`` on a labelled test set.

    With predictions :math:`\hat y_i`, :math:`S = \{i : y_i = s\}` the test
    images of the source class and :math:`M` the others,

    .. math:: b = \frac{|\{i \in S : \hat y_i = t\}|}{|S|}, \qquad
              a = \frac{|\{i \in M : \hat y_i = y_i\}|}{|M|}

    (``nan`` for an empty set): the backdoor task and the main task of
    Prakash & Avestimehr, DiverseFL, Sec. 4.2 ("label images with digit 3
    as digit 4 ... the main task is to correctly detect the remaining
    classes").

    Parameters
    ----------
    x, y : torch.Tensor
        Test inputs and labels.
    source, target : int
        The relabelled class ``s`` and the attacker's label ``t``.
    batch_size : int
        Evaluation batch size.

    Returns
    -------
    ServerMetric
        The metric; the test set is moved to the model's device once.

    Examples
    --------
    >>> model = nn.Linear(2, 3)
    >>> with torch.no_grad():
    ...     _ = model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    ...     _ = model.bias.zero_()
    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 0.0]])
    >>> class_backdoor_metric(x, torch.tensor([0, 1, 2, 2]), source=2, target=1)(model)
    {'backdoor_accuracy': 0.5, 'main_accuracy': 1.0}
    """
    cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    @torch.no_grad()
    def metric(model: nn.Module) -> dict[str, float]:
        device = next(model.parameters()).device
        if device not in cache:
            cache.clear()
            cache[device] = (x.to(device), y.to(device))
        xs, ys = cache[device]
        model.eval()
        pred = torch.cat(
            [predict(model(xs[i : i + batch_size])) for i in range(0, len(xs), batch_size)]
        )
        src = ys == source
        n_src, n_main = int(src.sum()), int((~src).sum())
        hits = int((pred[src] == target).sum())
        right = int((pred[~src] == ys[~src]).sum())
        return {
            "backdoor_accuracy": hits / n_src if n_src else math.nan,
            "main_accuracy": right / n_main if n_main else math.nan,
        }

    return metric


class ClassBackdoorClient(LabelFlipClient):
    r"""Relabel ``source_class`` as ``target_class``, train, and boost the update by ``gamma``.

    Prakash & Avestimehr, "Mitigating Byzantine Attacks in Federated
    Learning" (DiverseFL), Sec. 4.2: the attackers own every image of the
    backdoor class (``attack.data: {kind: class_owner, classes: [3]}``) and
    some main-task images, train on a mix of both with the backdoor images
    labelled ``t`` (MNIST: 3 -> 4), and submit the model-replacement update of
    Bagdasaryan et al. (AISTATS 2020) scaled by 7:
    :math:`L = G + \gamma (X - G)` (:func:`~clients.model_replacement.replacement_weights`).

    The server reports :func:`class_backdoor_metric` (``backdoor_accuracy``,
    ``main_accuracy``) on the test set.

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    source_class, target_class : int
        The relabelled class and its new label (DiverseFL: 3 and 4).
    gamma : float
        Boost of the update, ``> 0`` (DiverseFL: 7).
    """

    def __init__(
        self,
        env: ClientEnv,
        model: nn.Module | None = None,
        *,
        source_class: int = 3,
        target_class: int = 4,
        gamma: float = 7.0,
    ) -> None:
        num_classes = env.dataset.num_classes
        for name, label in (("source_class", source_class), ("target_class", target_class)):
            if not (isinstance(label, int) and 0 <= label < num_classes):
                raise ValueError(f"{name}: got {label!r}, must be a class in 0..{num_classes - 1}")
        if source_class == target_class:
            raise ValueError(f"target_class: got {target_class!r}, the same as source_class")
        if not (math.isfinite(gamma) and gamma > 0):
            raise ValueError(f"gamma: got {gamma!r}, must be a finite number > 0")
        super().__init__(env, model, mapping={source_class: target_class})
        self.gamma = float(gamma)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """``G + gamma (X - G)`` while active, else ``X``."""
        if not self.active(server_round):
            return trained
        return replacement_weights(global_weights, trained, self.gamma)

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """``backdoor_accuracy`` and ``main_accuracy`` of the global model on the test set."""
        params = cls.attack_params(cfg)
        return class_backdoor_metric(
            dataset.x_test,
            dataset.y_test,
            params["source_class"],
            params["target_class"],
            cfg.evaluation.batch_size,
        )
