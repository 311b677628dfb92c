"""Divide-and-Conquer (Shejwalkar & Houmansadr): drop outliers along the top singular vector."""

from __future__ import annotations

from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._params import check_number, check_positive_int
from strategies._too_few import ByzantineBound, check_on_too_few
from strategies.base import RobustStrategy
from strategies.krum import check_count
from strategies.median import coordinate_median


def dnc(
    updates: torch.Tensor,
    f: int,
    generator: torch.Generator,
    iterations: int = 1,
    c: float = 1.0,
    sub_dim: int = 10_000,
) -> Aggregate:
    r"""Divide-and-Conquer: the mean of the rows no iteration finds an outlier.

    Each of the ``iterations`` rounds draws ``b = min(sub_dim, d)`` random
    coordinates :math:`r`, centres the sub-sampled rows,
    :math:`\tilde u_i = u_{i,r} - \frac1n \sum_j u_{j,r}`, takes the top right
    singular vector :math:`v` of :math:`\tilde U` and scores every row by its
    squared projection

    .. math:: s_i = \langle \tilde u_i, v \rangle^2 ;

    the :math:`\lfloor c f \rfloor` highest scores are removed. The aggregate
    is the mean of the rows kept by every iteration. Shejwalkar and
    Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning", NDSS 2021, Algorithm 2
    (the paper's defaults: one iteration, ``c = 1``, ``b = 10,000``).
    Projections are computed in float64 (a row of ``1e30`` scores ``1e60``,
    not ``inf``); ties go to the lower row.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    f : int
        Number of Byzantine updates expected; requires
        :math:`n > \text{iterations} \cdot \lfloor c f \rfloor`.
    generator : torch.Generator
        CPU generator of the coordinate subsets.
    iterations : int
        Number of random subsets (``niters``).
    c : float
        Filtering fraction: :math:`\lfloor c f \rfloor` rows are removed per iteration.
    sub_dim : int
        Coordinates per subset ``b``.

    Returns
    -------
    Aggregate
        The mean of the kept rows (``selected``); the removed rows are
        ``flagged``; ``scores`` are the last iteration's :math:`s_i`.

    Examples
    --------
    >>> u = torch.tensor([[1.0, 0.0], [1.1, 0.1], [0.9, -0.1], [10.0, 10.0]])
    >>> agg = dnc(u, f=1, generator=torch.Generator().manual_seed(0))
    >>> agg.update, agg.selected, agg.flagged
    (tensor([1., 0.]), [0, 1, 2], [3])
    """
    n, d = updates.shape
    check_count("f", f)
    removed = int(c * f)
    if n <= iterations * removed:
        raise ValueError(
            f"DnC needs n > iterations * floor(c f); got n={n}, iterations={iterations}, "
            f"c={c}, f={f}"
        )
    good = torch.ones(n, dtype=torch.bool)
    scores = torch.zeros(n, dtype=torch.float64)
    for _ in range(iterations):
        cols = torch.randperm(d, generator=generator)[: min(sub_dim, d)].sort().values
        sub = updates[:, cols.to(updates.device)].to(torch.float64)
        centred = sub - sub.mean(dim=0)
        top = torch.linalg.svd(centred, full_matrices=False).Vh[0]
        scores = ((centred @ top) ** 2).cpu()
        order = torch.sort(-scores, stable=True).indices
        keep = torch.ones(n, dtype=torch.bool)
        keep[order[:removed]] = False
        good &= keep
    selected = good.nonzero().flatten().tolist()
    flagged = (~good).nonzero().flatten().tolist()
    update = updates[good.to(updates.device)].mean(dim=0)
    return Aggregate(update=update, selected=selected, flagged=flagged, scores=scores)


class DnC(ByzantineBound, RobustStrategy):
    """Divide-and-Conquer (:func:`dnc`): coordinate subsets drawn with ``ctx.generator``.

    Parameters
    ----------
    f : int
        Number of Byzantine clients expected per round.
    iterations : int
        Random coordinate subsets per round (paper: 1).
    c : float
        Filtering fraction in (0, 1]: ``floor(c f)`` rows removed per subset (paper: 1).
    sub_dim : int
        Coordinates per subset (paper: 10,000).
    on_too_few : {"raise", "reduce_f"}
        A round with ``n <= iterations * floor(c f)`` valid updates raises
        (``"raise"``, default) or uses the largest ``f`` it allows
        (``"reduce_f"``); the ``f`` used is the round metric ``f_used``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    requirement = "n > iterations * floor(c f)"

    def __init__(
        self,
        *,
        f: int,
        iterations: int = 1,
        c: float = 1.0,
        sub_dim: int = 10_000,
        on_too_few: str = "raise",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.f = check_count("f", f)
        self.iterations = check_positive_int("iterations", iterations)
        self.c = check_number("c", c, 0.0, 1.0)
        if self.c == 0:
            raise ValueError("c must be in (0, 1], got 0")
        self.sub_dim = check_positive_int("sub_dim", sub_dim)
        self.on_too_few = check_on_too_few(on_too_few)

    def max_f(self, n: int) -> int | None:
        """Largest ``f`` up to the configured one with ``n > iterations * floor(c f)``."""
        if n < 1:
            return None
        f = 0
        while f < self.f and n > self.iterations * int(self.c * (f + 1)):
            f += 1
        return f

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the mean of the rows DnC keeps."""
        f = self.round_f(updates.shape[0], ctx)
        if f is None:
            agg = coordinate_median(updates)
        else:
            agg = dnc(updates, f, ctx.generator, self.iterations, self.c, self.sub_dim)
        agg.metrics[self.f_metric] = f or 0
        return agg
