"""Federated averaging (McMahan et al., 2017) on the update matrix."""

from __future__ import annotations

from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies.base import RobustStrategy


def mean(updates: torch.Tensor, weights: torch.Tensor | None = None) -> Aggregate:
    r"""Weighted mean of the updates.

    .. math:: \bar u = \frac{\sum_i w_i u_i}{\sum_i w_i}

    With ``weights=None`` every client counts the same. McMahan et al.,
    "Communication-Efficient Learning of Deep Networks from Decentralized
    Data", AISTATS 2017, weight by the clients' sample counts.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    weights : torch.Tensor, optional
        Non-negative weights, shape ``(n,)``, with a positive sum.

    Returns
    -------
    Aggregate
        The mean; every row is selected.

    Examples
    --------
    >>> u = torch.tensor([[0.0, 2.0], [2.0, 4.0]])
    >>> mean(u, torch.tensor([1.0, 3.0])).update
    tensor([1.5000, 3.5000])
    """
    n = updates.shape[0]
    if weights is None:
        avg = updates.mean(dim=0)
    else:
        w = weights.to(device=updates.device, dtype=torch.float64)
        w = (w / w.sum()).to(torch.float32)
        avg = w @ updates
    return Aggregate(update=avg, selected=list(range(n)))


class FedAvg(RobustStrategy):
    """Flower strategy for :func:`mean`, weighted by reported sample counts.

    Equal to Flower's ``FedAvg`` on the same inputs (with ``server_lr=1``).
    Pass ``weighted=False`` for the unweighted mean.
    """

    supports_weighting = True

    def __init__(self, *, weighted: bool = True, **kwargs: Any) -> None:
        super().__init__(weighted=weighted, **kwargs)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the (weighted) mean of ``updates``."""
        return mean(updates, ctx.num_examples if self.weighted else None)
