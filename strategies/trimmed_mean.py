"""Coordinate-wise trimmed mean (Yin et al., 2018) on the update matrix."""

from __future__ import annotations

import math
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import column_slices, resolve_chunk, sorted_columns
from strategies._too_few import ByzantineBound, check_on_too_few
from strategies.base import RobustStrategy

DEFAULT_BETA = 0.1
"""Fraction trimmed per side when neither ``b`` nor ``beta`` is given."""


def trim_count(n: int, b: int | None, beta: float | None) -> int:
    """Values trimmed per side: ``b``, or ``floor(beta * n)``; exactly one must be given."""
    if (b is None) == (beta is None):
        raise ValueError(f"give exactly one of b and beta, got b={b!r}, beta={beta!r}")
    if beta is not None:
        if not 0.0 <= beta < 0.5:
            raise ValueError(f"beta must be in [0, 0.5), got {beta!r}")
        return math.floor(beta * n)
    if isinstance(b, bool) or not isinstance(b, int) or b < 0:
        raise ValueError(f"b must be a non-negative integer, got {b!r}")
    return b


def trimmed_mean(
    updates: torch.Tensor,
    b: int | None = None,
    beta: float | None = None,
    chunk: int | None = None,
) -> Aggregate:
    r"""Coordinate-wise trimmed mean: drop the ``b`` largest and smallest values, average the rest.

    .. math:: \operatorname{trmean}_b(U)_k = \frac{1}{n - 2b} \sum_{i=b+1}^{n-b} u_{(i)k}

    where :math:`u_{(1)k} \le \dots \le u_{(n)k}` are the sorted values of
    coordinate :math:`k`. Yin, Chen, Ramchandran and Bartlett,
    "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
    Rates", ICML 2018 (their :math:`\beta`-trimmed mean). Robust to up to
    ``b`` Byzantine values per coordinate.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    b : int, optional
        Values trimmed per side, ``2b < n``.
    beta : float, optional
        Fraction trimmed per side, in ``[0, 0.5)``: ``b = floor(beta * n)``,
        the convention of ``scipy.stats.trim_mean`` and Flower's
        ``FedTrimmedAvg`` (its ``beta``). Give exactly one of ``b`` and ``beta``.
    chunk : int, optional
        Columns sorted at a time; the extra memory is about ``2 * n * chunk`` floats.

    Returns
    -------
    Aggregate
        The trimmed mean.

    Raises
    ------
    ValueError
        If both or neither of ``b`` and ``beta`` are given, or ``2b >= n``.

    Examples
    --------
    >>> u = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])
    >>> trimmed_mean(u, b=1).update
    tensor([2.])
    >>> trimmed_mean(u, beta=0.2).update
    tensor([2.])
    """
    n, d = updates.shape
    cut = trim_count(n, b, beta)
    if 2 * cut >= n:
        raise ValueError(f"trimming b={cut} per side leaves nothing of n={n} updates")
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for cols in column_slices(d, resolve_chunk(chunk, updates.device)):
        out[cols] = sorted_columns(updates[:, cols])[:, cut : n - cut].mean(dim=1)
    return Aggregate(update=out)


class TrimmedMean(ByzantineBound, RobustStrategy):
    """Flower strategy for :func:`trimmed_mean`.

    Parameters
    ----------
    b : int, optional
        Values trimmed per side.
    beta : float, optional
        Fraction trimmed per side (``floor(beta * n)`` values). With neither
        ``b`` nor ``beta``, ``beta`` is :data:`DEFAULT_BETA`; it should be at
        least the expected fraction of attackers per round.
    on_too_few : {"raise", "reduce_f"}
        A round with ``2b >= n`` valid updates raises
        :class:`~strategies._too_few.TooFewClientsError` (``"raise"``,
        default) or trims ``(n - 1) // 2`` per side (``"reduce_f"``: the
        median of an odd count, the mean of the two middle values of an even
        one). ``beta`` always fits. The count trimmed per side is the round
        metric ``f_used``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.

    Notes
    -----
    With ``beta`` this is the same as Flower's ``FedTrimmedAvg(beta=beta)``
    on the same inputs.
    """

    requirement = "n > 2b"
    f_param = "b"

    def __init__(
        self,
        *,
        b: int | None = None,
        beta: float | None = None,
        on_too_few: str = "raise",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if b is None and beta is None:
            beta = DEFAULT_BETA
        trim_count(1, b, beta)
        self.b = b
        self.beta = beta
        self.on_too_few = check_on_too_few(on_too_few)

    def wanted_f(self, n: int) -> int:
        """Values trimmed per side for ``n`` updates: ``b``, or ``floor(beta * n)``."""
        return trim_count(n, self.b, self.beta)

    def max_f(self, n: int) -> int | None:
        """Most values trimmed per side that leave one: ``(n - 1) // 2``."""
        return (n - 1) // 2 if n >= 1 else None

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the trimmed mean of ``updates``."""
        cut = self.round_f(updates.shape[0], ctx) or 0
        agg = trimmed_mean(updates, b=cut)
        agg.metrics[self.f_metric] = cut
        return agg
