"""Krum and Multi-Krum (Blanchard et al., 2017) on the update matrix."""

from __future__ import annotations

from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import combine_rows, gram, sq_distances
from strategies._too_few import ByzantineBound, check_on_too_few
from strategies.base import RobustStrategy
from strategies.median import coordinate_median


def check_count(name: str, value: object) -> int:
    """Return ``value`` if it is a non-negative integer, else raise ``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return value


def neighbour_scores(dist: torch.Tensor, k: int) -> torch.Tensor:
    r"""Krum score of every row: the sum of its ``k`` smallest squared distances to the others.

    .. math:: s(i) = \sum_{j \in N_k(i)} \|u_i - u_j\|^2

    Parameters
    ----------
    dist : torch.Tensor
        Squared distances, shape ``(n, n)``, zero diagonal.
    k : int
        Neighbours counted, ``1 <= k <= n - 1``.
    """
    others = dist.clone()
    others.fill_diagonal_(float("inf"))
    return torch.topk(others, k, dim=1, largest=False).values.sum(dim=1)


def krum(
    updates: torch.Tensor,
    f: int,
    m: int | None = 1,
    weights: torch.Tensor | None = None,
    chunk: int | None = None,
) -> Aggregate:
    r"""Krum (``m = 1``) and Multi-Krum (``m > 1``).

    Every update is scored by the sum of its squared distances to its
    :math:`n - f - 2` nearest other updates,

    .. math:: s(i) = \sum_{j \in N_{n-f-2}(i)} \|u_i - u_j\|^2 ,

    and Krum returns the update of lowest score; Multi-Krum averages the
    :math:`m` updates of lowest scores (ties go to the lower row). Blanchard,
    El Mhamdi, Guerraoui and Stainer, "Machine Learning with Adversaries:
    Byzantine Tolerant Gradient Descent", NeurIPS 2017.

    The squared distances come from one Gram matrix
    (:math:`\|a\|^2 + \|b\|^2 - 2\,a \cdot b` on rows centred at a central
    row, float32 products summed in float64; see
    :func:`strategies._linalg.gram`), so rows of magnitude 1e30 produce huge
    but finite scores, never ``nan``.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    f : int
        Number of Byzantine updates tolerated; requires :math:`n > 2f + 2`.
    m : int or None
        Number of updates averaged: 1 is Krum; ``None`` means :math:`n - f`,
        the usual Multi-Krum choice.
    weights : torch.Tensor, optional
        Weights of the rows, shape ``(n,)``: the ``m`` selected updates are
        averaged with their weights renormalised (Flower's Multi-Krum weights
        by ``num_examples``). Uniform when ``None``.
    chunk : int, optional
        Columns per matrix product (memory bound).

    Returns
    -------
    Aggregate
        The (average of the) selected update(s); ``selected`` lists the rows
        by increasing score, ``scores`` holds every row's score (float64).

    Raises
    ------
    ValueError
        If :math:`n \le 2f + 2` or ``m`` is not in ``1 .. n``.

    Examples
    --------
    >>> u = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [10.0, 10.0]])
    >>> agg = krum(u, f=1)
    >>> agg.update, agg.selected
    (tensor([0., 0.]), [0])
    >>> agg.scores
    tensor([  2.,   3.,   3.,  10., 309.], dtype=torch.float64)
    >>> krum(u, f=1, m=3).update
    tensor([0.3333, 0.3333])
    """
    n = updates.shape[0]
    check_count("f", f)
    if n <= 2 * f + 2:
        raise ValueError(f"Krum needs n > 2f + 2 updates; got n={n}, f={f}")
    m = n - f if m is None else m
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"m must be an integer in 1..n={n}, got {m!r}")
    scores = neighbour_scores(sq_distances(gram(updates, chunk=chunk)), n - f - 2)
    chosen = torch.sort(scores.cpu(), stable=True).indices[:m].tolist()
    if m == 1:
        return Aggregate(update=updates[chosen[0]].clone(), selected=chosen, scores=scores)
    coef = torch.zeros(n, dtype=torch.float64)
    picked = torch.ones(m, dtype=torch.float64) if weights is None else weights[chosen].double()
    coef[chosen] = picked.cpu() / picked.sum().item()
    return Aggregate(update=combine_rows(updates, coef), selected=chosen, scores=scores)


class Krum(ByzantineBound, RobustStrategy):
    """Flower strategy for Krum: the global model moves by the single best-scored update.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated per round.
    on_too_few : {"raise", "reduce_f"}
        A round with ``n <= 2f + 2`` valid updates raises
        :class:`~strategies._too_few.TooFewClientsError` (``"raise"``,
        default) or runs with the largest ``f`` it allows, ``(n - 3) // 2``
        (``"reduce_f"``); with fewer than three updates it then takes their
        coordinate-wise median. The ``f`` used is the round metric ``f_used``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    supports_weighting = True
    requirement = "n > 2f + 2"

    def __init__(self, *, f: int, on_too_few: str = "raise", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.f = check_count("f", f)
        self.on_too_few = check_on_too_few(on_too_few)

    def max_f(self, n: int) -> int | None:
        """Largest ``f`` with ``n > 2f + 2``."""
        return (n - 3) // 2 if n >= 3 else None

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return Krum's choice among ``updates``."""
        f = self.round_f(updates.shape[0], ctx)
        agg = coordinate_median(updates) if f is None else krum(updates, f, m=1)
        agg.metrics[self.f_metric] = f or 0
        return agg


class MultiKrum(Krum):
    """Flower strategy for Multi-Krum: the mean of the ``m`` best-scored updates.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated per round.
    m : int, optional
        Updates averaged; ``None`` (default) means ``n - f`` for the round's ``n``.
        A round with fewer than ``m`` updates averages all it may select.
    on_too_few : {"raise", "reduce_f"}
        As for :class:`Krum`.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`; with
        ``weighted=True`` the selected updates are weighted by their reported
        sample counts, as Flower's ``Krum`` strategy does.
    """

    def __init__(
        self, *, f: int, m: int | None = None, on_too_few: str = "raise", **kwargs: Any
    ) -> None:
        super().__init__(f=f, on_too_few=on_too_few, **kwargs)
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise ValueError(f"m must be a positive integer or None, got {m!r}")
        self.m = m

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the mean of Multi-Krum's selection among ``updates``."""
        n = updates.shape[0]
        f = self.round_f(n, ctx)
        if f is None:
            agg = coordinate_median(updates)
        else:
            m = n - f if self.m is None else min(self.m, n)
            weights = ctx.num_examples if self.weighted else None
            agg = krum(updates, f, m=m, weights=weights)
        agg.metrics[self.f_metric] = f or 0
        return agg
