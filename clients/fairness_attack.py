"""The attack on fairness of Rance & Svoboda: steer FedAvg to a model trained on unfair data."""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
import torch
from flwr.common import NDArrays
from torch import nn

from clients.attack import AttackClient, attackers_per_round
from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed
from flsec_flower.models import get_weights, set_weights
from flsec_flower.seeds import BatchStream, Stream, numpy_rng
from flsec_flower.training import for_round, predict, train_local

T = TypeVar("T", float, np.ndarray, torch.Tensor)


def fairness_update(
    target_update: T,
    clean_update: T,
    n0: float,
    num_clients: int,
    samples: float,
    num_attackers: int = 1,
) -> T:
    r"""The malicious update that moves FedAvg's aggregate onto the target update.

    FedAvg over ``K`` clients gives :math:`\frac1n (k n_0 v + \sum_i n_i
    u_i)` with :math:`n = k n_0 + \sum_i n_i` when ``k`` attackers of
    ``n_0`` samples each send ``v``. Setting it equal to the target update
    ``m`` and predicting every other client's update by the attacker's own
    clean update :math:`\hat u` and its sample count by ``samples``
    (:math:`n_i = n_s`):

    .. math:: v = \frac{n m - (K - k)\, n_s \hat u}{k n_0},
              \qquad n = k n_0 + (K - k) n_s .

    With ``k = 1`` this is Rance & Svoboda's
    :math:`v = (n m - \sum_i n_i u_i) / n_0`; their code sums the attackers'
    sample counts the same way for several attackers. Joseph Rance & Filip
    Svoboda, "Can Fairness be Compromised? Attacks on Fairness in Federated
    Learning" (arXiv 2311.12715, 2023; "Attacks on fairness in Federated
    Learning").

    Parameters
    ----------
    target_update : float, numpy.ndarray or torch.Tensor
        ``m``: the target model minus the global model.
    clean_update : same type as ``target_update``
        :math:`\hat u`: the attacker's update on its clean data.
    n0 : float
        Samples of each attacker.
    num_clients : int
        ``K``: clients in the round, attackers included.
    samples : float
        ``n_s``: predicted samples of each other client.
    num_attackers : int
        ``k``: attackers in the round, all sending ``v``.

    Returns
    -------
    same type as ``target_update``
        The malicious update ``v``.

    Examples
    --------
    >>> fairness_update(1.0, 0.5, n0=10, num_clients=2, samples=10)
    1.5
    """
    k, rest = num_attackers, num_clients - num_attackers
    n = k * n0 + rest * samples
    return (n * target_update - rest * samples * clean_update) / (k * n0)


class FairnessAttackClient(AttackClient):
    r"""Rance & Svoboda's attack on fairness (see :func:`fairness_update`).

    While active, the attacker trains the global model honestly on its
    partition (giving :math:`\hat u`; it reports its partition size
    ``n_0``), trains the global model again on an *unfair* dataset (giving
    the target update ``m``) and returns the global model plus ``v``. The
    unfair dataset is drawn (seeded) from the whole training set, ``N /
    num_clients`` samples as in the authors' code, either

    - only samples of ``target_classes`` (their CIFAR-10 attack, classes 0
      and 1), or
    - with ``group`` given, samples of every kind but with the label of the
      group's members forced to ``forced_label`` (their Adult attack: lower
      income predicted for women, ``group={"attribute": "sex", "value": 0}``).

    The server reports ``target_accuracy`` (test accuracy on the target
    classes, or on the group's members) and ``other_accuracy`` (on the rest);
    in group mode also the headline ``attacked_group_accuracy``: accuracy on
    the group's members whose true label is not ``forced_label``, the
    examples the attack pushes to a wrong label (on Adult with
    ``group={"attribute": "sex", "value": 0}`` and ``forced_label=0``: the
    high-income women).

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    target_classes : list of int
        Classes the unfair dataset keeps.
    group : dict, optional
        ``{"attribute": name, "value": code}``: the group whose labels are
        forced; replaces the class selection.
    forced_label : int
        Label given to the group's members (0, "<=50K" on Adult).
    num_clients_estimate : int, optional
        ``K``; default the clients per round (``clients_per_round``, else
        ``data.num_clients``).
    samples_estimate : float, optional
        ``n_s``; default the attacker's own sample count ``n_0``.
    unfair_size : int, optional
        Size of the unfair dataset; default ``N / data.num_clients``.
    """

    def __init__(
        self,
        env: ClientEnv,
        model: nn.Module | None = None,
        *,
        target_classes: list[int] | None = None,
        group: dict[str, Any] | None = None,
        forced_label: int = 0,
        num_clients_estimate: int | None = None,
        samples_estimate: float | None = None,
        unfair_size: int | None = None,
    ) -> None:
        super().__init__(env, model)
        ds, cfg = env.dataset, env.cfg
        self.selection = _selection(ds, target_classes, group, forced_label)
        k = attackers_per_round(cfg)
        clients = cfg.sampled_clients if num_clients_estimate is None else num_clients_estimate
        if not k <= clients:
            raise ValueError(
                f"num_clients_estimate: got {clients!r}, below the {k} attacker(s) per round"
            )
        if samples_estimate is not None and not samples_estimate > 0:
            raise ValueError(f"samples_estimate: got {samples_estimate!r}, must be > 0")
        size = len(ds.y_train) // cfg.data.num_clients if unfair_size is None else unfair_size
        if not size >= 1:
            raise ValueError(f"unfair_size: got {unfair_size!r}, must be >= 1")
        self.num_attackers = k
        self.num_clients_estimate = clients
        self.samples_estimate = samples_estimate
        self.unfair_size = size

    def unfair_data(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The unfair dataset (the same draw every round), on the client's device."""
        ds = self.env.dataset
        eligible, labels = _unfair_pool(ds, self.selection)
        rng = numpy_rng(self.env.cfg.seed, self.partition_id, Stream.UNFAIR_DATA)
        take = rng.permutation(len(eligible))[: self.unfair_size]
        idx = torch.as_tensor(eligible[take], dtype=torch.long)
        return ds.x_train[idx].to(self.env.device), labels[idx].to(self.env.device)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """While active: the global model plus ``v`` from :func:`fairness_update`."""
        if not self.active(server_round):
            return trained
        set_weights(self.model, global_weights)
        x, y = self.unfair_data()
        gen = torch.Generator().manual_seed(
            client_seed(self.env.cfg, self.partition_id, server_round) + BatchStream.POISON_BATCHES
        )
        train_local(
            self.model, x, y, for_round(self.training_config(server_round), server_round), gen
        )
        target = get_weights(self.model)
        n0 = float(len(self.env.y))
        samples = n0 if self.samples_estimate is None else float(self.samples_estimate)
        out = []
        for g, t, c in zip(global_weights, target, trained, strict=True):
            g64 = g.astype(np.float64)
            v = fairness_update(
                t.astype(np.float64) - g64,
                c.astype(np.float64) - g64,
                n0,
                self.num_clients_estimate,
                samples,
                self.num_attackers,
            )
            w = g64 + v
            out.append((np.rint(w) if np.issubdtype(g.dtype, np.integer) else w).astype(g.dtype))
        return out

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """``target_accuracy``, ``other_accuracy`` (group mode: ``attacked_group_accuracy``)."""
        p = cls.attack_params(cfg)
        sel = _selection(dataset, p["target_classes"], p["group"], p["forced_label"])
        attacked = None
        if sel[0] == "group":
            in_target = dataset.groups_test[sel[1]] == sel[2]
            attacked = in_target & (dataset.y_test != sel[3])
        else:
            in_target = torch.isin(dataset.y_test, torch.as_tensor(sel[1]))
        x, y = dataset.x_test, dataset.y_test
        batch = cfg.evaluation.batch_size

        @torch.no_grad()
        def metric(model: nn.Module) -> dict[str, float]:
            device = next(model.parameters()).device
            model.eval()
            hits = torch.cat(
                [
                    (predict(model(x[i : i + batch].to(device))) == y[i : i + batch].to(device))
                    for i in range(0, len(y), batch)
                ]
            ).cpu()
            out = {
                "target_accuracy": _mean(hits[in_target]),
                "other_accuracy": _mean(hits[~in_target]),
            }
            if attacked is not None:
                out["attacked_group_accuracy"] = _mean(hits[attacked])
            return out

        return metric


def _mean(hits: torch.Tensor) -> float:
    return float(hits.double().mean()) if len(hits) else float("nan")


def _selection(
    ds: Dataset, target_classes: list[int] | None, group: dict[str, Any] | None, forced_label: int
) -> tuple[Any, ...]:
    """``("group", attribute, value, label)`` or ``("classes", [c, ...])``, validated."""
    if group is not None:
        if not isinstance(group, dict) or set(group) != {"attribute", "value"}:
            raise ValueError(f"group: got {group!r}, expected {{attribute: name, value: code}}")
        attribute = group["attribute"]
        if attribute not in ds.groups_train:
            allowed = ", ".join(sorted(ds.groups_train)) or "(the dataset has none)"
            raise ValueError(f"group: unknown attribute {attribute!r}; allowed: {allowed}")
        if not 0 <= forced_label < ds.num_classes:
            raise ValueError(
                f"forced_label: got {forced_label!r}, must be a class in 0..{ds.num_classes - 1}"
            )
        return ("group", attribute, int(group["value"]), forced_label)
    classes = [0, 1] if target_classes is None else [int(c) for c in target_classes]
    if not classes or not all(0 <= c < ds.num_classes for c in classes):
        raise ValueError(
            f"target_classes: got {target_classes!r}, expected classes in 0..{ds.num_classes - 1}"
        )
    return ("classes", classes)


def _unfair_pool(ds: Dataset, selection: tuple[Any, ...]) -> tuple[np.ndarray, torch.Tensor]:
    """Eligible training indices and the (possibly forced) labels of the whole training set."""
    if selection[0] == "group":
        _, attribute, value, label = selection
        members = ds.groups_train[attribute] == value
        labels = torch.where(members, torch.tensor(label), ds.y_train)
        return np.arange(len(ds.y_train)), labels
    eligible = torch.isin(ds.y_train, torch.as_tensor(selection[1]))
    return np.flatnonzero(eligible.numpy()), ds.y_train
