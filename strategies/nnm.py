"""Nearest-neighbour mixing (NNM): a pre-aggregation transform around any rule."""

from __future__ import annotations

from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import gram, sq_distances
from strategies._too_few import ByzantineBound, check_on_too_few
from strategies.base import RobustStrategy, WrappingStrategy


def nearest_neighbour_mixing(updates: torch.Tensor, f: int) -> torch.Tensor:
    r"""Replace each update by the mean of its ``n - f`` nearest neighbours.

    .. math:: y_i = \frac{1}{n - f} \sum_{j \in N_i} u_j

    where :math:`N_i` holds the ``n - f`` rows closest to :math:`u_i` in
    Euclidean distance, :math:`u_i` itself included (ties broken by the lower
    row index). Allouah, Farhadkhani, Guerraoui, Gupta, Pinot and Stephan,
    "Fixing by Mixing: A Recipe for Optimal Byzantine ML under
    Heterogeneity", AISTATS 2023, Algorithm 1. The mixed rows are then handed
    to a robust rule.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    f : int
        Number of Byzantine clients tolerated, ``0 <= f < n``.

    Returns
    -------
    torch.Tensor
        The mixed rows, shape ``(n, d)``; row ``i`` mixes around client ``i``.

    Raises
    ------
    ValueError
        If ``f`` is negative or not smaller than ``n``.

    Examples
    --------
    >>> u = torch.tensor([[0.0], [1.0], [10.0]])
    >>> nearest_neighbour_mixing(u, f=1)
    tensor([[0.5000],
            [0.5000],
            [5.5000]])
    """
    n = updates.shape[0]
    if not 0 <= f < n:
        raise ValueError(f"f must satisfy 0 <= f < n = {n}, got f={f}")
    dist = sq_distances(gram(updates)).fill_diagonal_(-1.0)
    order = torch.sort(dist, dim=1, stable=True).indices[:, : n - f]
    mixing = torch.zeros((n, n), dtype=updates.dtype, device=updates.device)
    mixing.scatter_(1, order, 1.0 / (n - f))
    return mixing @ updates


class NNM(ByzantineBound, WrappingStrategy):
    """Nearest-neighbour mixing before the wrapped rule (:func:`nearest_neighbour_mixing`).

    Row ``i`` of the mixed matrix stays client ``i``'s row, so the inner
    rule's selected and flagged rows keep their meaning and the round context
    is passed unchanged.

    Parameters
    ----------
    inner : RobustStrategy
        The rule applied to the mixed rows.
    f : int
        Number of Byzantine clients tolerated.
    on_too_few : {"raise", "reduce_f"}
        A round with ``n <= f`` valid updates raises
        :class:`~strategies._too_few.TooFewClientsError` (``"raise"``,
        default) or mixes with ``f = n - 1`` (``"reduce_f"``). The ``f``
        used is the round metric ``nnm_f_used``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    requirement = "n > f"
    f_metric = "nnm_f_used"

    def __init__(
        self, inner: RobustStrategy, *, f: int, on_too_few: str = "raise", **kwargs: Any
    ) -> None:
        super().__init__(inner, **kwargs)
        if isinstance(f, bool) or not isinstance(f, int) or f < 0:
            raise ValueError(f"f must be a non-negative integer, got {f!r}")
        self.f = f
        self.on_too_few = check_on_too_few(on_too_few)

    def max_f(self, n: int) -> int | None:
        """Largest ``f`` with ``n > f``."""
        return n - 1 if n >= 1 else None

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Mix the rows, then run the inner rule on them."""
        f = self.round_f(updates.shape[0], ctx) or 0
        agg = self.inner.aggregate_updates(nearest_neighbour_mixing(updates, f), ctx)
        agg.metrics[self.f_metric] = f
        return agg
