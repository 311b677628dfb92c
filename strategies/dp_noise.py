"""Gaussian noise on the aggregate ("weak differential privacy"), a post-transform.

Bagdasaryan et al. ("How To Backdoor Federated Learning", AISTATS 2020)
evaluate norm bounding plus Gaussian noise on the aggregate as a defence;
combine :class:`~strategies.norm_clip.NormClip` and :class:`DPNoise`
(``wrappers: [{name: norm_clip, ...}, {name: dp_noise, ...}]``). Flower's
``DifferentialPrivacyServerSideFixedClipping`` is not reused; the reasons are
in :mod:`strategies.norm_clip`.

The noise is added to the aggregate, before the server learning rate: the
model moves by ``x <- x + server_lr * (agg(U) + N(0, sigma^2 I))``, as in
DP-FedAvg (McMahan et al., ICLR 2018) where the noised average is the
server's update. With ``server_lr = 1`` the model gets noise of standard
deviation ``sigma``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies.base import RobustStrategy, WrappingStrategy


def gaussian_noise(
    aggregate: torch.Tensor, sigma: float, generator: torch.Generator
) -> torch.Tensor:
    r"""The aggregate plus isotropic Gaussian noise.

    .. math:: \tilde g = g + \xi, \quad \xi \sim \mathcal N(0, \sigma^2 I)

    Bagdasaryan, Veit, Hua, Estrin and Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020 (norm bound + weak DP). The noise is drawn on the
    CPU from ``generator`` (reproducible on every device), then moved.

    Parameters
    ----------
    aggregate : torch.Tensor
        Aggregated update, shape ``(d,)``.
    sigma : float
        Standard deviation, ``sigma >= 0``.
    generator : torch.Generator
        CPU generator of the noise.

    Returns
    -------
    torch.Tensor
        Shape ``(d,)``.

    Examples
    --------
    >>> g = torch.zeros(3)
    >>> gaussian_noise(g, 0.0, torch.Generator().manual_seed(0))
    tensor([0., 0., 0.])
    >>> noisy = gaussian_noise(g, 1.0, torch.Generator().manual_seed(0))
    >>> torch.equal(noisy, torch.randn(3, generator=torch.Generator().manual_seed(0)))
    True
    """
    noise = torch.randn(aggregate.shape, generator=generator, dtype=torch.float32)
    return aggregate + (sigma * noise).to(device=aggregate.device, dtype=aggregate.dtype)


class DPNoise(WrappingStrategy):
    """Gaussian noise of standard deviation ``sigma`` on the wrapped rule's aggregate.

    Seeded with ``ctx.generator``. The inner rule's selection passes through.

    Parameters
    ----------
    inner : RobustStrategy
        The rule whose aggregate is noised.
    sigma : float
        Standard deviation ``>= 0`` of the noise on the aggregate (the model
        gets ``server_lr * sigma``). It depends on the model, so there is no
        default; Flower's fixed-clipping DP corresponds to
        ``noise_multiplier * max_norm / n``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(self, inner: RobustStrategy, *, sigma: float, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise ValueError(f"sigma must be a number, got {sigma!r}")
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be non-negative and finite, got {sigma!r}")
        self.sigma = float(sigma)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Run the inner rule and add the noise to its aggregate."""
        agg = self.inner.aggregate_updates(updates, ctx)
        return replace(agg, update=gaussian_noise(agg.update, self.sigma, ctx.generator))
