"""Same-value attack: every coordinate of the update set to one constant."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from flwr.common import NDArrays

from clients.model_poisoning import ModelPoisoningClient, check_number


def same_value_weights(global_weights: NDArrays, sigma: float) -> NDArrays:
    r"""Weights carrying the constant update :math:`u = \sigma \mathbf 1`: :math:`G + \sigma`.

    Every floating-point coordinate moves by ``sigma``; integer buffers keep
    the global value.

    Parameters
    ----------
    global_weights : list of numpy.ndarray
        The global model ``G``.
    sigma : float
        The value of every coordinate of the update.

    Returns
    -------
    list of numpy.ndarray
        ``G + sigma`` in the dtypes of ``G``.

    Examples
    --------
    >>> same_value_weights([np.array([0.0, 1.0]), np.array(3)], 100.0)
    [array([100., 101.]), array(3)]
    """
    return [
        g.copy()
        if np.issubdtype(g.dtype, np.integer)
        else (g.astype(np.float64) + sigma).astype(g.dtype)
        for g in global_weights
    ]


@dataclass(frozen=True)
class SameValue:
    r"""The same-value attack as an update transform: :math:`\tilde u = \sigma \mathbf 1`.

    The constant replaces the update (:func:`same_value_weights`), so it needs no training.

    Parameters
    ----------
    sigma : float
        The constant (100, the setting of He, Karimireddy & Jaggi's
        resampling code).
    """

    needs_training: ClassVar[bool] = False
    sigma: float = 100.0

    def __post_init__(self) -> None:
        """Check ``sigma``."""
        check_number("sigma", self.sigma)

    def forge(
        self, global_weights: NDArrays, trained: NDArrays, rng: np.random.Generator | None
    ) -> NDArrays:
        """``G + sigma``."""
        return same_value_weights(global_weights, self.sigma)


class SameValueClient(ModelPoisoningClient):
    """Return the global model moved by ``sigma`` in every coordinate while active.

    The update does not depend on training, so an active attacker skips it.
    Parameters: the fields of :class:`SameValue` (``sigma``).
    """

    params_type = SameValue
