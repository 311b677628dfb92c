"""Noisy coordinate-wise median (Chen et al., 2020), DiverseFL's baseline, on the update matrix."""

from __future__ import annotations

import math
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import column_slices, resolve_chunk, sorted_columns
from strategies.base import RobustStrategy
from strategies.median import sorted_median


def device_generator(generator: torch.Generator, device: torch.device) -> torch.Generator:
    """``generator`` if it lives on ``device``, else one there seeded by a draw from it."""
    if generator.device == device:
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def noisy_median(
    updates: torch.Tensor,
    sigma: float,
    generator: torch.Generator,
    chunk: int | None = None,
) -> Aggregate:
    r"""Coordinate-wise median of the updates after adding Gaussian noise to each.

    .. math:: \operatorname{med}(U + Z), \qquad Z_{ik} \sim \mathcal N(0, \sigma^2)\ \text{i.i.d.}

    Chen, Chen, Sun, Wu and Hong, "Distributed Training with Heterogeneous
    Data: Bridging Median- and Mean-Based Algorithms", NeurIPS 2020
    (arXiv 2019): the noise makes the expected median track the mean under
    heterogeneous data. In the paper each client perturbs its own update; here
    the server draws the perturbation of every row (a server-side variant).
    An attacker's row is perturbed as well, which changes nothing for an
    arbitrary (Byzantine) row but denies an attacker exact control of what
    enters the median.

    DiverseFL's N-Median baseline ("each benign client adds random Gaussian
    noise with standard deviation sigma_N to each entry in its gradient
    update") is the client-side variant: ``training.gradient_noise_std:
    sigma_N`` (honest clients only, in gradient units, see
    :class:`clients.HonestClient`) with the plain ``median`` rule. Neither
    is the DP-style noise on the aggregate (the ``dp_noise`` wrapper).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    sigma : float
        Noise standard deviation :math:`\sigma \ge 0`.
    generator : torch.Generator
        Source of the noise. A generator on another device than ``updates``
        seeds a fresh one on the updates' device with one draw, so results
        are reproducible per device (CPU and GPU draws differ).
    chunk : int, optional
        Columns processed at a time (memory bound).

    Returns
    -------
    Aggregate
        The median of the perturbed updates.

    Examples
    --------
    >>> u = torch.tensor([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0]])
    >>> noisy_median(u, 0.0, torch.Generator().manual_seed(0)).update
    tensor([1., 2.])
    >>> a = noisy_median(u, 0.5, torch.Generator().manual_seed(1)).update
    >>> bool(torch.equal(a, noisy_median(u, 0.5, torch.Generator().manual_seed(1)).update))
    True
    """
    if not (math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be non-negative and finite, got {sigma!r}")
    d = updates.shape[1]
    gen = device_generator(generator, updates.device)
    out = torch.empty(d, dtype=updates.dtype, device=updates.device)
    for cols in column_slices(d, resolve_chunk(chunk, updates.device)):
        block = updates[:, cols]
        noise = torch.randn(block.shape, generator=gen, dtype=updates.dtype, device=updates.device)
        out[cols] = sorted_median(sorted_columns(noise.mul_(sigma).add_(block)))
    return Aggregate(update=out)


class NoisyMedian(RobustStrategy):
    """Flower strategy for :func:`noisy_median`, with the round's seeded generator.

    Parameters
    ----------
    sigma : float
        Noise standard deviation. Required: neither Chen et al. nor DiverseFL
        fix one value; it must be set to the scale of the updates.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(self, *, sigma: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ValueError(f"sigma must be non-negative and finite, got {sigma!r}")
        self.sigma = float(sigma)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the median of ``updates`` perturbed with the round's noise."""
        return noisy_median(updates, self.sigma, ctx.generator)
