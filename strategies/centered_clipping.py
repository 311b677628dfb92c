"""Centred clipping (Karimireddy, He and Jaggi, 2021) on the update matrix."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import combine_rows, gram, sq_distances_to_combination
from strategies.base import RobustStrategy


def check_params(tau: float, iterations: int) -> None:
    """Raise ``ValueError`` naming the first invalid parameter of :func:`centered_clipping`."""
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be positive and finite, got {tau!r}")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")


def centered_clipping(
    updates: torch.Tensor,
    tau: float = 10.0,
    iterations: int = 1,
    centre: torch.Tensor | None = None,
    chunk: int | None = None,
) -> Aggregate:
    r"""Centred clipping: move the centre by the mean of the updates clipped around it.

    .. math:: v \leftarrow v + \frac{1}{n} \sum_i (u_i - v)
              \min\Bigl(1, \frac{\tau}{\|u_i - v\|}\Bigr)

    repeated ``iterations`` (:math:`L`) times from the given centre (the
    previous round's aggregate; 0 at first). Karimireddy, He and Jaggi,
    "Learning from History for Byzantine Robust Optimization", ICML 2021. The
    defaults, :math:`L = 1` and :math:`\tau = 10`, follow the authors' code:
    one clipping step; :math:`\tau = 10 / (1 - \beta)` for worker momentum
    :math:`\beta` in the follow-up bucketing experiments (He, Karimireddy and
    Jaggi, ICLR 2022, which use :math:`L = 3`), i.e. 10 without momentum;
    their momentum study uses :math:`\tau = 100`. A Byzantine update moves
    the centre by at most :math:`\tau / n` per step.

    Every :math:`v` is a combination of the updates and the starting centre,
    so the distances :math:`\|u_i - v\|` come from one Gram matrix and the
    run costs one matrix product pass and one weighted sum of the rows.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    tau : float
        Clipping radius :math:`\tau > 0`.
    iterations : int
        Clipping steps :math:`L \ge 1`.
    centre : torch.Tensor, optional
        Starting centre, shape ``(d,)``; zero when ``None``.
    chunk : int, optional
        Columns per matrix product (memory bound).

    Returns
    -------
    Aggregate
        The final centre :math:`v`; ``scores`` holds each row's clipping
        factor :math:`\min(1, \tau / \|u_i - v\|)` in the last step.

    Examples
    --------
    >>> u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [300.0, 400.0]])
    >>> centered_clipping(u, tau=10.0).update
    tensor([2.3333, 3.0000])
    """
    check_params(tau, iterations)
    n, d = updates.shape
    start = updates.new_zeros(d) if centre is None else centre.to(updates)
    g = gram(updates, extra=start[None, :], chunk=chunk)
    w = torch.zeros(n + 1, dtype=torch.float64, device=updates.device)
    w[n] = 1.0
    factor = torch.ones(n, dtype=torch.float64, device=updates.device)
    for _ in range(iterations):
        dist = sq_distances_to_combination(g, w)[:n].sqrt()
        factor = (tau / dist).clamp(max=1.0)
        step = factor / n
        w = w * (1.0 - step.sum())
        w[:n] += step
    update = combine_rows(updates, w[:n]).add_(start, alpha=float(w[n]))
    return Aggregate(update=update, scores=factor)


class CenteredClipping(RobustStrategy):
    """Flower strategy for :func:`centered_clipping`, with the centre kept across rounds.

    The centre starts at zero and becomes each round's aggregate, the
    server-side counterpart of the paper's momentum: clients' updates
    (``x_i - x_global``) are clipped around the previous round's aggregate
    update.

    Parameters
    ----------
    tau : float
        Clipping radius (10).
    iterations : int
        Clipping steps per round (1).
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    state_attributes: ClassVar[tuple[str, ...]] = ("centre",)

    def __init__(self, *, tau: float = 10.0, iterations: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_params(tau, iterations)
        self.tau = float(tau)
        self.iterations = iterations
        self.centre: torch.Tensor | None = None

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Clip ``updates`` around the kept centre and move it."""
        agg = centered_clipping(updates, self.tau, self.iterations, centre=self.centre)
        self.centre = agg.update.clone()
        return agg
