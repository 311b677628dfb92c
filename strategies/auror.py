"""Auror (Shen, Tople & Saxena): per-coordinate 2-means, flag clients in minority clusters."""

from __future__ import annotations

from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import column_slices, resolve_chunk, sorted_columns
from strategies._params import check_number
from strategies.base import RobustStrategy


def column_two_means(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Exact 2-means of every column of ``block`` (shape ``(n, c)``), in float64.

    In one dimension the optimal clusters are the two sides of a cut of the
    sorted values; the cut maximising
    :math:`S_L^2 / k + S_R^2 / (n - k)` (equivalently minimising the
    within-cluster sum of squares) is taken, ties to the lower cut.

    Returns
    -------
    tuple of torch.Tensor
        ``(low_centre, high_centre, threshold)``, each of shape ``(c,)``:
        the cluster means and the largest value of the low cluster (a row
        is in the high cluster when its value exceeds the threshold).

    Examples
    --------
    >>> low, high, threshold = column_two_means(torch.tensor([[0.0], [1.0], [0.25], [1.25]]))
    >>> low.tolist(), high.tolist(), threshold.tolist()
    ([0.125], [1.125], [0.25])
    """
    x = sorted_columns(block).to(torch.float64)
    n = x.shape[1]
    k = torch.arange(1, n, dtype=torch.float64, device=x.device)
    left = x.cumsum(dim=1)[:, :-1]
    total = x.sum(dim=1, keepdim=True)
    cut = torch.argmax(left**2 / k + (total - left) ** 2 / (n - k), dim=1)
    low_sum = left.gather(1, cut[:, None])[:, 0]
    size = (cut + 1).to(torch.float64)
    low = low_sum / size
    high = (total[:, 0] - low_sum) / (n - size)
    return low, high, x.gather(1, cut[:, None])[:, 0]


def auror(
    updates: torch.Tensor, alpha: float, tau: float = 0.5, chunk: int | None = None
) -> Aggregate:
    r"""Auror: mean of the rows that are rarely in the minority cluster of an indicative coordinate.

    For every coordinate :math:`k` the clients' values are split by 2-means
    (:func:`column_two_means`); the coordinate is *indicative* when the two
    centres are more than :math:`\alpha` apart, and its smaller cluster is
    *suspicious* (an even split has none). A client in the suspicious
    cluster of more than :math:`\tau` of the indicative coordinates is
    flagged; the aggregate is the mean of the others,

    .. math:: g = \frac{1}{|K|} \sum_{i \in K} u_i .

    Shen, Tople and Saxena, "Auror: Defending Against Poisoning Attacks in
    Collaborative Deep Learning Systems", ACSAC 2016, Section 4 (the
    thresholds are set per task in the paper; :math:`\alpha` is in the units
    of the updates). With no indicative coordinate nobody is flagged; when
    everybody is flagged the aggregate is zero (the global model is kept).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``, ``n >= 2``.
    alpha : float
        Distance between cluster centres above which a coordinate is indicative.
    tau : float
        Share of the indicative coordinates a client may be suspicious in, in ``[0, 1]``.
    chunk : int, optional
        Columns clustered at a time (memory bound).

    Returns
    -------
    Aggregate
        The mean of the unflagged rows; ``scores`` are each row's share of
        indicative coordinates in which it is suspicious; metric
        ``auror_indicative`` counts the indicative coordinates.

    Examples
    --------
    >>> u = torch.tensor([[0.1, 0.0], [0.0, 0.1], [0.1, 0.1], [5.0, 5.0]])
    >>> agg = auror(u, alpha=1.0)
    >>> agg.update, agg.flagged
    (tensor([0.0667, 0.0667]), [3])
    """
    n, d = updates.shape
    suspicious = torch.zeros(n, dtype=torch.float64, device=updates.device)
    indicative = 0
    for cols in column_slices(d, resolve_chunk(chunk, updates.device)):
        block = updates[:, cols]
        low, high, threshold = column_two_means(block)
        upper = block.to(torch.float64) > threshold[None, :]
        size = upper.sum(dim=0)
        useful = (high - low > alpha) & (2 * size != n)
        minority = torch.where((2 * size < n)[None, :], upper, ~upper) & useful[None, :]
        suspicious += minority.sum(dim=1).to(torch.float64)
        indicative += int((high - low > alpha).sum())
    share = suspicious / indicative if indicative else suspicious
    keep = (share <= tau).cpu()
    selected = keep.nonzero().flatten().tolist()
    flagged = (~keep).nonzero().flatten().tolist()
    metrics: dict[str, float] = {"auror_indicative": indicative}
    if not selected:
        zero = torch.zeros_like(updates[0])
        return Aggregate(zero, selected=[], flagged=flagged, scores=share, metrics=metrics)
    update = updates[keep.to(updates.device)].mean(dim=0)
    return Aggregate(update, selected=selected, flagged=flagged, scores=share, metrics=metrics)


class Auror(RobustStrategy):
    """Auror (:func:`auror`) on every round's updates.

    Parameters
    ----------
    alpha : float
        Centre distance that makes a coordinate indicative, ``> 0``, in the
        units of the updates (the paper tunes it per task).
    tau : float
        Share of indicative coordinates a client may be suspicious in, in ``[0, 1]``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(self, *, alpha: float = 0.02, tau: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.alpha = check_number("alpha", alpha, 0.0)
        self.tau = check_number("tau", tau, 0.0, 1.0)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Flag the clients Auror finds suspicious and average the rest."""
        if updates.shape[0] < 2:
            return Aggregate(updates[0].clone(), selected=[0], flagged=[])
        return auror(updates, self.alpha, self.tau)
