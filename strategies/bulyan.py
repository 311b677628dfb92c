"""Bulyan (El Mhamdi, Guerraoui and Rouault, 2018) on the update matrix."""

from __future__ import annotations

from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import column_slices, gram, resolve_chunk, sorted_columns, sq_distances
from strategies._too_few import ByzantineBound, check_on_too_few
from strategies.base import RobustStrategy
from strategies.krum import check_count, neighbour_scores
from strategies.median import coordinate_median, sorted_median


def recursive_krum(dist: torch.Tensor, f: int, count: int) -> list[int]:
    """Bulyan's selection: apply Krum ``count`` times, each time removing the chosen row.

    Krum on the ``r`` rows still in play scores each by its
    ``k = min(max(1, r - f - 2), r - 1)`` nearest others and takes the lowest
    score (the lower row on ties); ``f`` stays fixed, as in the paper.
    """
    remaining = list(range(dist.shape[0]))
    chosen: list[int] = []
    for _ in range(count):
        r = len(remaining)
        index = torch.as_tensor(remaining, device=dist.device)
        sub = dist.index_select(0, index).index_select(1, index)
        scores = neighbour_scores(sub, min(max(1, r - f - 2), r - 1))
        best = int(torch.sort(scores.cpu(), stable=True).indices[0])
        chosen.append(remaining.pop(best))
    return chosen


def closest_to_median_mean(sorted_rows: torch.Tensor, beta: int) -> torch.Tensor:
    """Mean of the ``beta`` values of each sorted row closest to the row's median.

    Those values are consecutive in sorted order: the window of ``beta``
    values whose farthest member is nearest to the median. Among windows
    equally near (values at equal distances on both sides of the median) the
    lowest is taken.
    """
    width = sorted_rows.shape[1] - beta + 1
    med = sorted_median(sorted_rows)[:, None]
    radius = torch.maximum(med - sorted_rows[:, :width], sorted_rows[:, beta - 1 :] - med)
    start = torch.argmin(radius, dim=1, keepdim=True)
    offsets = torch.arange(beta, device=sorted_rows.device)
    return sorted_rows.gather(1, start + offsets).mean(dim=1)


def bulyan(updates: torch.Tensor, f: int, chunk: int | None = None) -> Aggregate:
    r"""Bulyan: recursive Krum selection, then a coordinate-wise trimmed mean around the median.

    1. Selection: :math:`\theta = n - 2f` updates are chosen by applying
       Krum (tolerating ``f``) to the remaining updates, removing each choice.
    2. Aggregation: for every coordinate, the :math:`\beta = \theta - 2f`
       selected values closest to their median are averaged,

    .. math:: \operatorname{bulyan}(U)_k = \frac{1}{\beta}
              \sum_{i \in M_k} u_{ik}, \quad
              M_k = \operatorname*{arg\,min}_{|M| = \beta} \sum_{i \in M}
              |u_{ik} - \operatorname{median}_{j \in S} u_{jk}| .

    El Mhamdi, Guerraoui and Rouault, "The Hidden Vulnerability of Distributed
    Learning in Byzantium", ICML 2018. Requires :math:`n \ge 4f + 3`.

    Agrees with Flower's ``aggregate_bulyan(results, f, aggregate_krum,
    to_keep=0)``: the same Krum neighbour count (at least one neighbour once
    fewer than :math:`f + 3` updates remain) and the same median (the mean of
    the two middle values for an even :math:`\theta`). They may differ only
    on exact ties: Krum ties go to the lower row here, and values equally far
    from the median to the lower values (Flower's ``argpartition`` leaves
    them unspecified).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    f : int
        Number of Byzantine updates tolerated.
    chunk : int, optional
        Columns per matrix product and per sort (memory bound).

    Returns
    -------
    Aggregate
        The Bulyan update; ``selected`` lists the :math:`\theta` rows in the
        order recursive Krum chose them.

    Raises
    ------
    ValueError
        If :math:`n < 4f + 3`.

    Examples
    --------
    >>> u = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 0.0], [3.0, 4.0],
    ...                   [4.0, 3.0], [5.0, 5.0], [90.0, -90.0]])
    >>> agg = bulyan(u, f=1)
    >>> agg.selected
    [1, 4, 2, 3, 0]
    >>> agg.update
    tensor([2., 2.])
    """
    n, d = updates.shape
    check_count("f", f)
    if n < 4 * f + 3:
        raise ValueError(f"Bulyan needs n >= 4f + 3 updates; got n={n}, f={f}")
    theta = n - 2 * f
    beta = theta - 2 * f
    chosen = recursive_krum(sq_distances(gram(updates, chunk=chunk)), f, theta)
    rows = torch.as_tensor(chosen, device=updates.device)
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for cols in column_slices(d, resolve_chunk(chunk, updates.device)):
        block = updates[:, cols].index_select(0, rows)
        out[cols] = closest_to_median_mean(sorted_columns(block), beta)
    return Aggregate(update=out, selected=chosen)


class Bulyan(ByzantineBound, RobustStrategy):
    """Flower strategy for :func:`bulyan`.

    Parameters
    ----------
    f : int
        Number of Byzantine clients tolerated per round.
    on_too_few : {"raise", "reduce_f"}
        A round with ``n < 4f + 3`` valid updates raises
        :class:`~strategies._too_few.TooFewClientsError` (``"raise"``,
        default) or runs with the largest ``f`` it allows, ``(n - 3) // 4``
        (``"reduce_f"``). When that is 0 (Bulyan with ``f = 0`` is the plain
        mean) or ``n < 3``, it takes the coordinate-wise median instead. The
        ``f`` used is the round metric ``f_used``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    requirement = "n >= 4f + 3"

    def __init__(self, *, f: int, on_too_few: str = "raise", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.f = check_count("f", f)
        self.on_too_few = check_on_too_few(on_too_few)

    def max_f(self, n: int) -> int | None:
        """Largest ``f`` with ``n >= 4f + 3``."""
        return (n - 3) // 4 if n >= 3 else None

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the Bulyan aggregate of ``updates``."""
        f = self.round_f(updates.shape[0], ctx)
        if f is None or (f == 0 and self.f > 0):
            agg = coordinate_median(updates)
        else:
            agg = bulyan(updates, f)
        agg.metrics[self.f_metric] = f or 0
        return agg
