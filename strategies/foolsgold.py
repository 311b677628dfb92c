"""FoolsGold (Fung, Yoon & Beschastnikh): down-weight clients whose update histories look alike."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import inner_products
from strategies.base import RobustStrategy

_ROUNDING = 1e-9
"""``1 - max cos`` below this is 0: identical histories, up to float64 rounding."""


def foolsgold_weights(histories: torch.Tensor, kappa: float = 1.0) -> torch.Tensor:
    r"""FoolsGold's per-client learning rates from the clients' update histories.

    With :math:`cs_{ij} = \cos(H_i, H_j)` for :math:`i \ne j` (0 on the
    diagonal, and for a zero history) and :math:`v_i = \max_j cs_{ij}`:

    1. pardoning: :math:`cs_{ij} \leftarrow cs_{ij} \, v_i / v_j` when :math:`v_j > v_i`;
    2. :math:`\alpha_i = 1 - \max_j cs_{ij}`, clipped to :math:`[0, 1]`;
    3. :math:`\alpha \leftarrow \alpha / \max_j \alpha_j`, and :math:`\alpha_i = 1`
       becomes 0.99;
    4. logit: :math:`\alpha_i \leftarrow \kappa (\ln \frac{\alpha_i}{1 - \alpha_i} + 0.5)`,
       clipped to :math:`[0, 1]`.

    Fung, Yoon and Beschastnikh, "The Limitations of Federated Learning in
    Sybil Settings", RAID 2020, Algorithm 1 (without the optional feature
    importance weighting), with the constants of the authors' code
    (``DistributedML/FoolsGold``). In step 2, :math:`\alpha_i < 10^{-9}`
    counts as 0 (identical histories whose cosine rounds just below 1), and
    when every :math:`\alpha_i` is then 0 (all histories alike) every weight
    is 0.

    Parameters
    ----------
    histories : torch.Tensor
        Summed past updates of each client, shape ``(n, d)``.
    kappa : float
        Confidence parameter of the logit (paper: 1).

    Returns
    -------
    torch.Tensor
        Weights in ``[0, 1]``, shape ``(n,)``, float64.

    Examples
    --------
    >>> h = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    >>> foolsgold_weights(h)
    tensor([0., 0., 1.], dtype=torch.float64)
    """
    gram = inner_products(histories)
    norms = gram.diagonal().clamp(min=0.0).sqrt()
    cs = torch.nan_to_num(gram / (norms[:, None] * norms[None, :]), nan=0.0)
    cs.fill_diagonal_(0.0)
    v = cs.max(dim=1).values
    pardon = (v[None, :] > v[:, None]) & (v[None, :] != 0)
    ratio = v[:, None] / torch.where(v[None, :] != 0, v[None, :], 1.0)
    cs = torch.where(pardon, cs * ratio, cs)
    alpha = (1.0 - cs.max(dim=1).values).clamp(0.0, 1.0)
    alpha = torch.where(alpha < _ROUNDING, 0.0, alpha)
    top = alpha.max()
    if top <= 0:
        return torch.zeros_like(alpha)
    alpha = alpha / top
    alpha = torch.where(alpha == 1.0, 0.99, alpha)
    logit = kappa * (torch.log(alpha / (1.0 - alpha)) + 0.5)
    return torch.nan_to_num(logit, nan=0.0, posinf=1.0, neginf=0.0).clamp(0.0, 1.0)


def weighted_mean(updates: torch.Tensor, weights: torch.Tensor) -> Aggregate:
    r"""FoolsGold's aggregate: :math:`\sum_i \alpha_i u_i / \sum_i \alpha_i`.

    Rows of weight 0 are flagged, the others selected; with all weights 0
    the update is zero (the global model is kept).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    weights : torch.Tensor
        Non-negative weights, shape ``(n,)``.

    Returns
    -------
    Aggregate
        The weighted mean; ``scores`` are the weights.

    Examples
    --------
    >>> agg = weighted_mean(torch.tensor([[1.0], [3.0]]), torch.tensor([1.0, 0.0]))
    >>> agg.update, agg.selected, agg.flagged
    (tensor([1.]), [0], [1])
    """
    w = weights.to(device=updates.device, dtype=torch.float64)
    selected = (w > 0).nonzero().flatten().tolist()
    flagged = (w <= 0).nonzero().flatten().tolist()
    if not selected:
        return Aggregate(torch.zeros_like(updates[0]), selected=[], flagged=flagged, scores=w)
    update = (w / w.sum()).to(updates.dtype) @ updates
    return Aggregate(update=update, selected=selected, flagged=flagged, scores=w)


class FoolsGold(RobustStrategy):
    r"""FoolsGold: histories kept per partition id across rounds, weighted mean of this round.

    Each round, every participant's update is added to its history
    :math:`H_i` (kept on the aggregation device, so the memory grows to one
    model per client seen), the weights come from the participants'
    histories (:func:`foolsgold_weights`) and the round's updates are
    averaged with them (:func:`weighted_mean`). The paper's Algorithm 1
    returns :math:`\sum_i \alpha_i u_i` unnormalised (the authors' code
    divides it by ``n``); the normalised mean keeps the step size independent
    of how many clients are down-weighted.

    Parameters
    ----------
    kappa : float
        Confidence parameter of the logit (paper: 1).
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    state_attributes: ClassVar[tuple[str, ...]] = ("histories",)

    def __init__(self, *, kappa: float = 1.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(kappa, bool) or not isinstance(kappa, (int, float)):
            raise ValueError(f"kappa must be a number, got {kappa!r}")
        if not (math.isfinite(kappa) and kappa > 0):
            raise ValueError(f"kappa must be positive and finite, got {kappa!r}")
        self.kappa = float(kappa)
        self.histories: dict[int, torch.Tensor] = {}

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Update the histories, weight the participants, average."""
        rows = []
        for pid, update in zip(ctx.partition_ids, updates, strict=True):
            previous = self.histories.get(pid)
            history = update.clone() if previous is None else previous + update
            self.histories[pid] = history
            rows.append(history)
        weights = foolsgold_weights(torch.stack(rows), self.kappa)
        return weighted_mean(updates, weights)
