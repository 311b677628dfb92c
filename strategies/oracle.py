"""OracleSGD: the mean of the truly honest updates (a simulation-only reference)."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies.base import RobustStrategy


def oracle_mean(updates: torch.Tensor, honest: torch.Tensor) -> Aggregate:
    r"""Mean of the rows marked honest; the malicious rows are flagged.

    .. math:: \bar u = \frac{1}{|H|} \sum_{i \in H} u_i

    The reference point of Byzantine-robustness papers (e.g. the "oracle"
    baseline of Prakash and Avestimehr's DiverseFL, "Mitigating Byzantine
    Attacks in Federated Learning", arXiv 2020): what the server would do if
    it knew who attacks. With no honest row the update is zero (the global
    model is kept).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    honest : torch.Tensor
        Boolean mask, shape ``(n,)``.

    Returns
    -------
    Aggregate
        The honest mean; honest rows selected, the others flagged.

    Examples
    --------
    >>> u = torch.tensor([[1.0], [3.0], [100.0]])
    >>> agg = oracle_mean(u, torch.tensor([True, True, False]))
    >>> agg.update, agg.selected, agg.flagged
    (tensor([2.]), [0, 1], [2])
    """
    mask = honest.to(device=updates.device, dtype=torch.bool)
    rows = mask.nonzero().flatten().tolist()
    flagged = (~mask).nonzero().flatten().tolist()
    if not rows:
        return Aggregate(update=torch.zeros_like(updates[0]), selected=[], flagged=flagged)
    weights = mask.to(updates.dtype) / len(rows)
    return Aggregate(update=weights @ updates, selected=rows, flagged=flagged)


class OracleSGD(RobustStrategy):
    """Average only the truly honest clients (:func:`oracle_mean`).

    Simulation only: it is given the ground truth at construction, which the
    simulation knows and a real server never does. It is a reference line
    for plots, not a defence, and the one strategy that holds the ground
    truth. Its rows must be clients: inside Bucketing its rows are bucket
    means, which have no ground truth, and it raises.

    Parameters
    ----------
    malicious_partition_ids : collection of int
        The attackers' partition ids (the simulation's ground truth).
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(
        self, *, malicious_partition_ids: Collection[int] = frozenset(), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.malicious_partition_ids = frozenset(malicious_partition_ids)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the mean of the rows whose partition id is not malicious."""
        groups = [pid for pid in ctx.partition_ids if pid < 0]
        if groups:
            raise ValueError(
                f"OracleSGD got {len(groups)} rows that are no client's (pseudo partition "
                "ids < 0, e.g. bucket means): its ground truth is per client; do not put it "
                "inside Bucketing"
            )
        honest = torch.tensor(
            [pid not in self.malicious_partition_ids for pid in ctx.partition_ids],
            dtype=torch.bool,
        )
        return oracle_mean(updates, honest)
