r"""Robust learning rate (Ozdayi, Kantarcioglu & Gel): a sign-agreement mask on the aggregate.

How the wrapper's output relates to the paper. The paper moves the model by

.. math:: x \leftarrow x + \eta_\theta \odot \mathrm{agg}(U), \qquad
          \eta_{\theta,k} = \begin{cases} +\eta & |\sum_i \mathrm{sgn}(u_{i,k})| \ge \theta \\
                                          -\eta & \text{otherwise.} \end{cases}

The strategy base already multiplies the aggregate by ``server_lr``, so the
wrapper returns ``mask * agg(U)`` with ``mask`` in ``{+1, -1}`` and the model
moves by ``x <- x + server_lr * mask * agg(U)``: with ``server_lr = eta`` that
is exactly the paper's update. The signs are taken over the rows the wrapper
receives (after any pre-transform inside it, such as clipping).
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies.base import RobustStrategy, WrappingStrategy

logger = logging.getLogger("flsec")

_BLOCK_ELEMENTS = 1 << 24
"""Elements of ``U`` whose signs are taken at a time."""


def sign_agreement_mask(updates: torch.Tensor, theta: float) -> torch.Tensor:
    r"""Per coordinate: ``+1`` where enough clients agree on the sign, ``-1`` elsewhere.

    .. math:: m_k = +1 \text{ if } \Big|\sum_i \mathrm{sgn}(u_{i,k})\Big| \ge \theta
              \text{ else } -1

    Ozdayi, Kantarcioglu and Gel, "Defending against Backdoors in Federated
    Learning with Robust Learning Rate", AAAI 2021. Computed over blocks of
    columns so the memory stays bounded.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    theta : float
        Agreement threshold (in number of clients).

    Returns
    -------
    torch.Tensor
        The mask, shape ``(d,)``, dtype of ``updates``.

    Examples
    --------
    >>> u = torch.tensor([[1.0, -1.0, 2.0], [3.0, 1.0, -1.0], [0.5, -2.0, -3.0]])
    >>> sign_agreement_mask(u, theta=3)
    tensor([ 1., -1., -1.])
    """
    n, d = updates.shape
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    mask = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for start in range(0, d, step):
        votes = torch.sign(updates[:, start : start + step]).sum(dim=0).abs()
        mask[start : start + step] = torch.where(votes >= theta, 1.0, -1.0)
    return mask


def robust_lr(updates: torch.Tensor, aggregate: torch.Tensor, theta: float) -> torch.Tensor:
    """The aggregate with the coordinates of low sign agreement negated: ``mask * aggregate``.

    See :func:`sign_agreement_mask`; the server then applies ``server_lr``.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix the signs are taken from, shape ``(n, d)``.
    aggregate : torch.Tensor
        The inner rule's aggregate, shape ``(d,)``.
    theta : float
        Agreement threshold.

    Returns
    -------
    torch.Tensor
        Shape ``(d,)``.

    Examples
    --------
    >>> u = torch.tensor([[1.0, -1.0], [1.0, 3.0]])
    >>> robust_lr(u, u.mean(dim=0), theta=2)
    tensor([ 1., -1.])
    """
    return sign_agreement_mask(updates, theta) * aggregate


class RobustLR(WrappingStrategy):
    """Robust learning rate around the wrapped rule (:func:`robust_lr`), a post-transform.

    Parameters
    ----------
    inner : RobustStrategy
        The rule whose aggregate is masked (the paper uses the mean).
    theta : float
        Sign-agreement threshold, in clients; the paper's default setting is
        ``4`` (Fashion-MNIST, 10 agents). Must be positive.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`; ``server_lr`` is
        the paper's ``eta``.
    """

    def __init__(self, inner: RobustStrategy, *, theta: float = 4, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        if isinstance(theta, bool) or not isinstance(theta, (int, float)):
            raise ValueError(f"theta must be a number, got {theta!r}")
        if not (math.isfinite(theta) and theta > 0):
            raise ValueError(f"theta must be positive and finite, got {theta!r}")
        self.theta = float(theta)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Run the inner rule and negate the coordinates where clients disagree."""
        if updates.shape[0] < self.theta:
            logger.warning(
                "round %d: RLR has theta=%g but only %d updates: every coordinate is negated",
                ctx.server_round,
                self.theta,
                updates.shape[0],
            )
        agg = self.inner.aggregate_updates(updates, ctx)
        return replace(agg, update=robust_lr(updates, agg.update, self.theta))
