"""FLTrust (Cao, Fang, Liu & Gong): trust bootstrapped from a small server-side root dataset."""

from __future__ import annotations

import logging
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import row_norms
from strategies.base import RobustStrategy

logger = logging.getLogger("flsec")

_BLOCK_ELEMENTS = 1 << 24


def fltrust(updates: torch.Tensor, server_update: torch.Tensor) -> Aggregate:
    r"""Trust-weighted mean of the updates rescaled to the server update's norm.

    .. math::
        TS_i = \mathrm{ReLU}(\cos(u_i, g_0)), \qquad
        \bar u_i = \frac{\lVert g_0 \rVert}{\lVert u_i \rVert} u_i, \qquad
        g = \frac{\sum_i TS_i \, \bar u_i}{\sum_i TS_i}

    Cao, Fang, Liu and Gong, "FLTrust: Byzantine-robust Federated Learning
    via Trust Bootstrapping", NDSS 2021, Algorithm 2. :math:`g_0` is the
    update the server computes on its root dataset. A zero update gets trust
    0. When every trust score is 0 the aggregate is zero (the global model is
    kept).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    server_update : torch.Tensor
        The server's update :math:`g_0`, shape ``(d,)``.

    Returns
    -------
    Aggregate
        ``g``; rows with positive trust selected, the others flagged;
        ``scores`` are the trust scores.

    Examples
    --------
    >>> u = torch.tensor([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
    >>> agg = fltrust(u, torch.tensor([1.0, 1.0]))
    >>> agg.update, agg.selected, agg.flagged
    (tensor([0.7071, 0.7071]), [0, 1], [2])
    """
    n, d = updates.shape
    g0 = server_update.to(device=updates.device, dtype=updates.dtype)
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    dots = torch.zeros(n, dtype=torch.float64, device=updates.device)
    for start in range(0, d, step):
        block = updates[:, start : start + step].to(torch.float64)
        dots += block @ g0[start : start + step].to(torch.float64)
    norms = row_norms(updates)
    g0_norm = row_norms(g0)
    cosine = torch.nan_to_num(dots / (norms * g0_norm), nan=0.0)
    trust = cosine.clamp(min=0.0)
    selected = (trust > 0).nonzero().flatten().tolist()
    flagged = (trust <= 0).nonzero().flatten().tolist()
    total = trust.sum()
    if total <= 0:
        return Aggregate(torch.zeros_like(g0), selected=[], flagged=flagged, scores=trust)
    weights = torch.where(trust > 0, trust * g0_norm / norms, 0.0) / total
    update = weights.to(updates.dtype) @ updates
    return Aggregate(update=update, selected=selected, flagged=flagged, scores=trust)


class FLTrust(RobustStrategy):
    """FLTrust (:func:`fltrust`); the server update is ``ctx.local_trainer`` on the root set.

    The root dataset is given at construction (``root_data=``); the paper
    samples it from the clean data, ``root_size = 100`` examples, which is
    what the assembly layer draws with the run's seed.

    Parameters
    ----------
    root_size : int
        Number of root examples the assembly layer draws (paper: 100).
    root_data : tuple of torch.Tensor, optional
        The server's clean root dataset ``(x, y)``; required before the
        first aggregation.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy` (``local_trainer``
        trains on the root set).
    """

    def __init__(
        self,
        *,
        root_size: int = 100,
        root_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(root_size, bool) or not isinstance(root_size, int) or root_size < 1:
            raise ValueError(f"root_size must be a positive integer, got {root_size!r}")
        self.root_size = root_size
        self.root_data = root_data

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Train on the root set from the global model, then aggregate by trust."""
        if ctx.local_trainer is None or self.root_data is None:
            raise RuntimeError(
                "FLTrust needs local_trainer= and root_data= (the server's root dataset)"
            )
        server_update = ctx.local_trainer(
            ctx.global_params, *self.root_data, server_round=ctx.server_round
        )
        if not bool(torch.isfinite(server_update).all()):
            logger.warning(
                "round %d: FLTrust's server update is not finite; model kept", ctx.server_round
            )
            zero = torch.zeros_like(updates[0])
            return Aggregate(zero, selected=[], flagged=list(range(updates.shape[0])))
        return fltrust(updates, server_update)
