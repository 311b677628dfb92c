"""Fang et al.'s error-rate and loss-based rejection (ERR / LFR) on a server validation set."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._too_few import ByzantineBound, check_on_too_few
from strategies.base import RobustStrategy
from strategies.krum import check_count
from strategies.median import coordinate_median

logger = logging.getLogger("flsec")

CRITERIA = ("err", "lfr", "union")
"""Rejection criteria: error rate, loss, or the rows either rejects."""

BASES = ("mean", "median")
"""Rules applied to the rows that are kept (and in the leave-one-out models)."""

Evaluate = Callable[[torch.Tensor], tuple[float, float]]
"""``evaluate(model_flat) -> (loss, error_rate)`` on the server's validation set."""


def _rule(base: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if base == "mean":
        return lambda rows: rows.mean(dim=0)
    return lambda rows: coordinate_median(rows).update


def _impact(with_all: float, without: float) -> float:
    """How much worse the model is with a row than without it; ``nan`` counts as ``inf``."""
    a = math.inf if math.isnan(with_all) else with_all
    b = math.inf if math.isnan(without) else without
    return 0.0 if a == b else a - b


def fang_rejection(
    updates: torch.Tensor,
    global_params: torch.Tensor,
    evaluate: Evaluate,
    f: int,
    criterion: str = "err",
    base: str = "mean",
) -> Aggregate:
    r"""Reject the ``f`` updates whose inclusion hurts the validation error (or loss) most.

    With :math:`A` the base rule, :math:`G` the global model and
    :math:`E(\cdot)` the error rate (ERR) or loss (LFR) on the server's
    validation set, every row gets the impact

    .. math:: \Delta_i = E\big(G + A(U)\big) - E\big(G + A(U_{-i})\big)

    (how much worse the model is with :math:`u_i` than without it); the
    ``f`` rows of largest impact are removed (ties to the lower row) and the
    aggregate is :math:`A` of the rest. ``"union"`` removes the rows either
    criterion removes. Fang, Cao, Jia and Gong, "Local Model Poisoning
    Attacks to Byzantine-Robust Federated Learning", USENIX Security 2020,
    Section 5 (defences). A non-finite loss counts as infinitely bad.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``, ``n > f`` (``n > 2 f`` for ``"union"``).
    global_params : torch.Tensor
        Global model :math:`G`, shape ``(d,)``.
    evaluate : callable
        ``evaluate(model_flat) -> (loss, error_rate)`` on the validation set.
    f : int
        Rows removed per criterion.
    criterion : {"err", "lfr", "union"}
        Error rate, loss, or both.
    base : {"mean", "median"}
        The rule :math:`A`.

    Returns
    -------
    Aggregate
        :math:`A` of the kept rows; removed rows ``flagged``; ``scores`` are
        the impacts of the criterion (ERR's for ``"union"``).

    Examples
    --------
    >>> u = torch.tensor([[1.0], [1.2], [0.8], [-6.0]])
    >>> loss_err = lambda w: (float((w[0] - 1.0) ** 2), float(abs(w[0] - 1.0) > 0.5))
    >>> agg = fang_rejection(u, torch.zeros(1), loss_err, f=1, criterion="lfr")
    >>> agg.update, agg.flagged
    (tensor([1.]), [3])
    """
    n = updates.shape[0]
    check_count("f", f)
    removable = 2 * f if criterion == "union" else f
    if n <= removable:
        raise ValueError(
            f"Fang rejection ({criterion}) needs n > {'2f' if criterion == 'union' else 'f'} "
            f"updates; got n={n}, f={f}"
        )
    rule = _rule(base)
    g = global_params.to(updates.device)
    loss_all, err_all = evaluate(g + rule(updates))
    err_impact = torch.zeros(n, dtype=torch.float64)
    loss_impact = torch.zeros(n, dtype=torch.float64)
    for i in range(n):
        rest = torch.cat([updates[:i], updates[i + 1 :]])
        loss_i, err_i = evaluate(g + rule(rest))
        err_impact[i] = _impact(err_all, err_i)
        loss_impact[i] = _impact(loss_all, loss_i)
    removed: set[int] = set()
    for name, impact in (("err", err_impact), ("lfr", loss_impact)):
        if criterion in (name, "union"):
            removed |= set(torch.sort(-impact, stable=True).indices[:f].tolist())
    flagged = sorted(removed)
    selected = [i for i in range(n) if i not in removed]
    update = rule(updates[torch.as_tensor(selected, device=updates.device)])
    scores = loss_impact if criterion == "lfr" else err_impact
    return Aggregate(update, selected=selected, flagged=flagged, scores=scores)


class FangRejection(ByzantineBound, RobustStrategy):
    """ERR / LFR rejection (:func:`fang_rejection`) on a server validation set.

    The validation set is given at construction (``root_data=``; the
    assembly layer draws ``root_size`` clean training examples with the
    run's seed, as for FLTrust); the model is evaluated by
    ``ctx.local_trainer.evaluate``.
    With ``criterion="union"`` up to ``2 f`` rows are removed.

    Parameters
    ----------
    f : int
        Rows removed per criterion (the expected number of attackers).
    criterion : {"err", "lfr", "union"}
        Error-rate based (ERR), loss based (LFR) or both.
    base : {"mean", "median"}
        Rule applied to the kept rows (Fang et al. pair the rejection with
        the rule it defends).
    root_size : int
        Validation examples the assembly layer draws.
    root_data : tuple of torch.Tensor, optional
        The server's validation set ``(x, y)``; required before the first
        aggregation.
    on_too_few : {"raise", "reduce_f"}
        A round with ``n <= f`` (``n <= 2 f`` for ``"union"``) valid updates
        raises or uses the largest ``f`` it allows.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy` (``local_trainer``
        evaluates the models).
    """

    requirement = "n > f (n > 2f for union)"

    def __init__(
        self,
        *,
        f: int,
        criterion: str = "err",
        base: str = "mean",
        root_size: int = 100,
        root_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        on_too_few: str = "raise",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.f = check_count("f", f)
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
        if base not in BASES:
            raise ValueError(f"base must be one of {', '.join(BASES)}, got {base!r}")
        if isinstance(root_size, bool) or not isinstance(root_size, int) or root_size < 1:
            raise ValueError(f"root_size must be a positive integer, got {root_size!r}")
        self.criterion = criterion
        self.base = base
        self.root_size = root_size
        self.on_too_few = check_on_too_few(on_too_few)
        self.root_data = root_data

    def max_f(self, n: int) -> int | None:
        """Largest ``f`` that leaves a row: ``n - 1``, or ``(n - 1) // 2`` for the union."""
        if n < 1:
            return None
        return (n - 1) // 2 if self.criterion == "union" else n - 1

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Evaluate the leave-one-out models on the validation set and reject the worst rows."""
        f = self.round_f(updates.shape[0], ctx)
        trainer = ctx.local_trainer
        if trainer is None or self.root_data is None:
            raise RuntimeError(
                "FangRejection needs root_data= (the server's validation set) and "
                "local_trainer= (its evaluate method scores the models)"
            )
        x, y = self.root_data
        agg = fang_rejection(
            updates,
            ctx.global_params,
            lambda flat: trainer.evaluate(flat, x, y),
            f or 0,
            self.criterion,
            self.base,
        )
        agg.metrics[self.f_metric] = f or 0
        return agg
