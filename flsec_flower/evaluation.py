"""Server-side evaluation of the global model on the centralised test set."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from flwr.common import NDArrays, Scalar
from torch import nn

from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.models import set_weights
from flsec_flower.training import evaluate, predict

ServerMetric = Callable[[nn.Module], dict[str, float]]
"""``metric(global_model) -> {name: value}``, computed by the server at every evaluation."""


def group_accuracies(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, groups: dict[str, torch.Tensor]
) -> dict[str, float]:
    """Accuracy per value of each attribute, and per (value, label) pair.

    E.g. on Adult ``sex=0_label=1_accuracy`` is the accuracy on high-income women.
    """
    if not groups:
        return {}
    with torch.no_grad():
        model.eval()
        hits = torch.cat([predict(model(x[i : i + 4096])) for i in range(0, len(x), 4096)]) == y
    out: dict[str, float] = {}
    for name, codes in groups.items():
        codes = codes.to(y.device)
        for value in torch.unique(codes).tolist():
            mask = codes == value
            out[f"{name}={value}_accuracy"] = float(hits[mask].double().mean())
            for label in torch.unique(y[mask]).tolist():
                sub = mask & (y == label)
                out[f"{name}={value}_label={label}_accuracy"] = float(hits[sub].double().mean())
    return out


class CentralEvaluator:
    """``evaluate_fn`` for Flower: loss, accuracy, per-class accuracy, bias, extras.

    Evaluates every ``evaluation.every`` rounds, on round 0 and on the last round.

    Parameters
    ----------
    cfg : ExperimentConfig
        The experiment.
    dataset : Dataset
        Provides the test set.
    model : torch.nn.Module
        A model of the run's architecture (weights overwritten at each call).
    device : torch.device
        Evaluation device.
    extra : list of callable
        Further metrics on the global model (backdoor accuracy, ...).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        dataset: Dataset,
        model: nn.Module,
        device: torch.device,
        extra: list[ServerMetric] | None = None,
    ) -> None:
        self.cfg = cfg
        self.num_classes = dataset.num_classes
        self.model = model.to(device)
        self.x = dataset.x_test.to(device)
        if device.type == "cpu" and self.x.dim() == 4:
            # Images: convolutions and pooling run ~1.5x faster on CPU in NHWC layout.
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.y = dataset.y_test.to(device)
        self.groups = {k: v.to(device) for k, v in dataset.groups_test.items()}
        self.extra = extra or []

    def due(self, server_round: int) -> bool:
        """Whether ``server_round`` is evaluated."""
        every = self.cfg.evaluation.every
        return server_round in (0, self.cfg.rounds) or server_round % every == 0

    def __call__(
        self, server_round: int, parameters: NDArrays, config: dict[str, Scalar]
    ) -> tuple[float, dict] | None:
        """Evaluate ``parameters``; ``None`` on rounds that are not due."""
        if not self.due(server_round):
            return None
        set_weights(self.model, parameters)
        res = evaluate(self.model, self.x, self.y, self.num_classes, self.cfg.evaluation.batch_size)
        metrics: dict = {
            "accuracy": res.accuracy,
            "bias": res.bias,
            "per_class_accuracy": res.per_class_accuracy,
        }
        metrics.update(group_accuracies(self.model, self.x, self.y, self.groups))
        for metric in self.extra:
            metrics.update(metric(self.model))
        loss = res.loss if np.isfinite(res.loss) else float("inf")
        return loss, metrics
