"""Gaussian attack: a random update of large variance."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from flwr.common import NDArrays

from clients.model_poisoning import ModelPoisoningClient, check_number


def gaussian_weights(global_weights: NDArrays, sigma: float, rng: np.random.Generator) -> NDArrays:
    r"""Weights carrying a Gaussian update: :math:`G + u`, :math:`u \sim \mathcal N(0, \sigma^2 I)`.

    Every floating-point coordinate gets independent noise; integer buffers
    keep the global value (their update is zero).

    Parameters
    ----------
    global_weights : list of numpy.ndarray
        The global model ``G``.
    sigma : float
        Standard deviation of every coordinate of the update.
    rng : numpy.random.Generator
        Source of the noise.

    Returns
    -------
    list of numpy.ndarray
        ``G + u`` in the dtypes of ``G``.

    Examples
    --------
    >>> w = gaussian_weights([np.zeros(100_000, np.float32)], 200.0, np.random.default_rng(0))
    >>> round(float(w[0].std()) / 200, 1)
    1.0
    """
    out = []
    for g in global_weights:
        if np.issubdtype(g.dtype, np.integer):
            out.append(g.copy())
        else:
            out.append((g.astype(np.float64) + rng.normal(0.0, sigma, g.shape)).astype(g.dtype))
    return out


@dataclass(frozen=True)
class Gaussian:
    r"""The Gaussian attack as an update transform: :math:`\tilde u \sim \mathcal N(0, \sigma^2 I)`.

    The noise replaces the update (:func:`gaussian_weights`), so it needs no training.

    Parameters
    ----------
    sigma : float
        Standard deviation of the update's coordinates (200, the setting of
        He, Karimireddy & Jaggi's resampling paper, arXiv 2006.09365).
    """

    needs_training: ClassVar[bool] = False
    sigma: float = 200.0

    def __post_init__(self) -> None:
        """Check ``sigma``."""
        check_number("sigma", self.sigma, at_least=0)

    def forge(
        self, global_weights: NDArrays, trained: NDArrays, rng: np.random.Generator
    ) -> NDArrays:
        """``G + N(0, sigma^2 I)``."""
        return gaussian_weights(global_weights, self.sigma, rng)


class GaussianClient(ModelPoisoningClient):
    """Return the global model plus Gaussian noise (:func:`gaussian_weights`) while active.

    The noise replaces the update, so an active attacker skips training. The
    noise is seeded by the run's seed, the partition and the round.
    Parameters: the fields of :class:`Gaussian` (``sigma``).
    """

    params_type = Gaussian
