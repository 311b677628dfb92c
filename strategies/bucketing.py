"""Bucketing and resampling (He, Karimireddy & Jaggi): averages of random groups before a rule.

Both transforms replace the ``n`` client rows by averages of random groups of
clients and hand those to the wrapped rule:

- ``"bucketing"`` (ICLR 2022, Algorithm 1): a random permutation of the rows
  is cut into ``ceil(n / s)`` consecutive buckets of ``s`` rows (the last one
  may be smaller), and each bucket is replaced by its mean;
- ``"resampling"`` (the earlier arXiv version, "Byzantine-Robust Learning on
  Heterogeneous Datasets via Resampling", Algorithm 2, "resampling with
  s-replacement"): ``T = n`` averages of ``s`` rows each, where every row is
  drawn exactly ``s`` times overall. It is implemented as the authors'
  reference code does (``resampling_wrapper`` in
  ``epfml/byzantine-robust-noniid-optimizer``): the index list
  ``[0..n-1]`` repeated ``s`` times is shuffled and cut into ``n`` groups of
  ``s`` consecutive entries. A group may hold the same row twice.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._too_few import ByzantineBound, TooFewClientsError, check_on_too_few
from strategies.base import RobustStrategy, WrappingStrategy

MODES = ("bucketing", "resampling")


def bucket_groups(n: int, s: int, generator: torch.Generator) -> list[list[int]]:
    """Rows of each bucket: a random permutation of ``range(n)`` cut into groups of ``s``.

    Parameters
    ----------
    n : int
        Number of rows.
    s : int
        Bucket size (the last bucket holds ``n mod s`` rows when ``s`` does not divide ``n``).
    generator : torch.Generator
        CPU generator of the permutation.

    Returns
    -------
    list of list of int
        ``ceil(n / s)`` disjoint groups covering every row once.

    Examples
    --------
    >>> bucket_groups(3, 2, torch.Generator().manual_seed(0))
    [[2, 0], [1]]
    """
    perm = torch.randperm(n, generator=generator).tolist()
    return [perm[i : i + s] for i in range(0, n, s)]


def resampling_groups(n: int, s: int, generator: torch.Generator) -> list[list[int]]:
    """Rows of each resampled average: ``n`` groups of ``s`` draws, each row drawn ``s`` times.

    Sampling with ``s``-replacement: the multiset in which every row index
    appears ``s`` times is put in a uniformly random order and cut into ``n``
    consecutive groups of ``s`` entries.

    Parameters
    ----------
    n : int
        Number of rows (and of groups).
    s : int
        Draws per group, and the number of times each row is drawn.
    generator : torch.Generator
        CPU generator of the order.

    Returns
    -------
    list of list of int
        ``n`` groups of ``s`` row indices (repeats allowed).

    Examples
    --------
    >>> groups = resampling_groups(3, 2, torch.Generator().manual_seed(0))
    >>> len(groups), sorted(i for g in groups for i in g)
    (3, [0, 0, 1, 1, 2, 2])
    """
    replicated = torch.arange(n).repeat(s)
    order = replicated[torch.randperm(n * s, generator=generator)].tolist()
    return [order[t * s : (t + 1) * s] for t in range(n)]


def group_means(updates: torch.Tensor, groups: list[list[int]]) -> torch.Tensor:
    r"""Mean of the rows of each group, by one matrix product.

    .. math:: y_t = \frac{1}{|g_t|} \sum_{i \in g_t} u_i

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    groups : list of list of int
        Row indices of each group (a row listed twice counts twice).

    Returns
    -------
    torch.Tensor
        Shape ``(len(groups), d)``.

    Examples
    --------
    >>> group_means(torch.tensor([[0.0], [2.0], [4.0]]), [[0, 1], [2, 2]])
    tensor([[1.],
            [4.]])
    """
    weights = torch.zeros((len(groups), updates.shape[0]), dtype=torch.float64)
    for t, group in enumerate(groups):
        for i in group:
            weights[t, i] += 1.0 / len(group)
    return weights.to(device=updates.device, dtype=updates.dtype) @ updates


def bucketize(
    updates: torch.Tensor, s: int, generator: torch.Generator, mode: str = "bucketing"
) -> tuple[torch.Tensor, list[list[int]]]:
    """Average random groups of rows: He, Karimireddy & Jaggi's bucketing or resampling.

    He, Karimireddy and Jaggi, "Byzantine-Robust Learning on Heterogeneous
    Datasets via Bucketing", ICLR 2022 (arXiv: "... via Resampling").
    ``mode="bucketing"`` uses :func:`bucket_groups` (``ceil(n / s)`` rows
    out), ``mode="resampling"`` uses :func:`resampling_groups` (``n`` rows
    out). ``s = 1`` with bucketing only permutes the rows.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    s : int
        Group size, ``s >= 1``.
    generator : torch.Generator
        CPU generator of the random grouping.
    mode : {"bucketing", "resampling"}
        Which grouping.

    Returns
    -------
    tuple of (torch.Tensor, list of list of int)
        The group means and, for each, the original rows it averages.

    Raises
    ------
    ValueError
        If ``s < 1`` or ``mode`` is unknown.

    Examples
    --------
    >>> u = torch.tensor([[0.0], [2.0], [4.0], [6.0]])
    >>> y, groups = bucketize(u, 2, torch.Generator().manual_seed(0))
    >>> groups, y.flatten().tolist()
    ([[0, 1], [3, 2]], [1.0, 5.0])
    """
    if s < 1:
        raise ValueError(f"s must be at least 1, got {s}")
    n = updates.shape[0]
    if mode == "bucketing":
        groups = bucket_groups(n, s, generator)
    elif mode == "resampling":
        groups = resampling_groups(n, s, generator)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return group_means(updates, groups), groups


def group_context(ctx: RoundContext, groups: list[list[int]]) -> RoundContext:
    """The round context seen by a rule whose rows are group averages.

    Group ``t`` gets the pseudo partition id ``-(t + 1)`` (no real client has
    it, so rules with per-client state never mix a group with a client), the
    summed sample counts of its members and no client metrics.

    Parameters
    ----------
    ctx : RoundContext
        Context of the original rows.
    groups : list of list of int
        Original rows averaged by each group.

    Returns
    -------
    RoundContext
        Row-aligned with the group averages.
    """
    return replace(
        ctx,
        partition_ids=[-(t + 1) for t in range(len(groups))],
        num_examples=torch.stack([ctx.num_examples[g].sum() for g in groups]),
        client_metrics=[],
    )


def map_back(agg: Aggregate, groups: list[list[int]]) -> Aggregate:
    """Express an aggregate over groups in original rows.

    A row is selected when any group holding it is selected, and flagged
    when every group holding it is flagged. Per-group scores are dropped;
    the rule's metrics are kept.

    Parameters
    ----------
    agg : Aggregate
        The inner rule's result, rows = groups.
    groups : list of list of int
        Original rows averaged by each group.

    Returns
    -------
    Aggregate
        The same update, with selected/flagged as original rows.

    Examples
    --------
    >>> agg = Aggregate(torch.zeros(1), selected=[1], flagged=[0])
    >>> out = map_back(agg, [[0, 2], [1, 3]])
    >>> out.selected, out.flagged
    ([1, 3], [0, 2])
    """
    selected = None
    if agg.selected is not None:
        selected = sorted({i for t in agg.selected for i in groups[t]})
    flagged = None
    if agg.flagged is not None:
        dropped = set(agg.flagged)
        rows = {i for g in groups for i in g}
        flagged = sorted(
            i for i in rows if all(t in dropped for t, g in enumerate(groups) if i in g)
        )
    return Aggregate(update=agg.update, selected=selected, flagged=flagged, metrics=agg.metrics)


class Bucketing(WrappingStrategy):
    """Bucketing (or resampling) before the wrapped rule: ``Bucketing(Krum(f=2), s=2)``.

    Each round, the rows are grouped with ``ctx.generator`` (see
    :func:`bucketize`), the inner rule aggregates the group means under
    :func:`group_context`, and its selection is mapped back to clients with
    :func:`map_back`.

    Parameters
    ----------
    inner : RobustStrategy
        The rule applied to the group means.
    s : int
        Group size; the papers use ``s = 2``.
    mode : {"bucketing", "resampling"}
        ``"bucketing"`` (ICLR 2022) or ``"resampling"`` (arXiv version).
    on_too_few : {"raise", "reduce_f"}
        The policy of the wrapped rules' Byzantine bounds on the group
        means (it overrides theirs): ``n`` clients give ``ceil(n / s)``
        bucket means, which can be too few for the inner rule's ``f``.
        ``"raise"`` (default) raises
        :class:`~strategies._too_few.TooFewClientsError` naming ``s`` and
        ``f``; ``"reduce_f"`` lets the inner rule lower its ``f`` for the
        round (reported as ``f_used``).
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(
        self,
        inner: RobustStrategy,
        *,
        s: int = 2,
        mode: str = "bucketing",
        on_too_few: str = "raise",
        **kwargs: Any,
    ) -> None:
        super().__init__(inner, **kwargs)
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"s must be an integer >= 1, got {s!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.s = s
        self.mode = mode
        self.on_too_few = check_on_too_few(on_too_few)

    def groups_for(self, n: int) -> int:
        """Rows the inner rule gets from ``n`` clients: ``ceil(n / s)`` buckets, or ``n``."""
        return -(-n // self.s) if self.mode == "bucketing" else n

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Group, aggregate the group means with the inner rule, map the selection back."""
        n = updates.shape[0]
        inner = self.inner
        groups_n = self.groups_for(n)
        if (
            self.on_too_few == "raise"
            and isinstance(inner, ByzantineBound)
            and not inner.fits(groups_n)
        ):
            raise TooFewClientsError(
                f"round {ctx.server_round}: Bucketing with s={self.s} turns n={n} updates "
                f"into {groups_n} means, too few for {type(inner).__name__}'s "
                f"{inner.f_param}={inner.wanted_f(groups_n)} "
                f"({inner.requirement}; on_too_few='reduce_f' lowers it)"
            )
        means, groups = bucketize(updates, self.s, ctx.generator, self.mode)
        inner_ctx = replace(group_context(ctx, groups), on_too_few=self.on_too_few)
        return map_back(inner.aggregate_updates(means, inner_ctx), groups)
