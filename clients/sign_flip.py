"""Sign flipping: the attacker sends its honest update reversed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from flwr.common import NDArrays

from clients.model_poisoning import ModelPoisoningClient, check_number


def sign_flip(global_weights: NDArrays, trained: NDArrays, scale: float = 1.0) -> NDArrays:
    r"""Weights carrying the reversed update: :math:`G - s\,(X - G)`.

    The update :math:`u = X - G` of the honestly trained model ``X`` is
    replaced by :math:`-s\,u` (the "bit flipping" / sign-flipping attack of He,
    Karimireddy & Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
    via Resampling", arXiv 2006.09365, 2020; ICLR 2022 as "... via
    Bucketing", where ``s = 1``). Integer buffers are rounded.

    Parameters
    ----------
    global_weights : list of numpy.ndarray
        The global model ``G``.
    trained : list of numpy.ndarray
        The attacker's honestly trained model ``X``.
    scale : float
        ``s``, the factor on the reversed update.

    Returns
    -------
    list of numpy.ndarray
        ``G - s (X - G)``, in the dtypes of ``G``.

    Examples
    --------
    >>> g, x = [np.array([1.0, 2.0])], [np.array([1.5, 1.0])]
    >>> sign_flip(g, x)[0]
    array([0.5, 3. ])
    """
    out = []
    for g, x in zip(global_weights, trained, strict=True):
        g64 = g.astype(np.float64)
        w = g64 - scale * (x.astype(np.float64) - g64)
        out.append((np.rint(w) if np.issubdtype(g.dtype, np.integer) else w).astype(g.dtype))
    return out


@dataclass(frozen=True)
class SignFlip:
    r"""Sign flipping as an update transform: :math:`\tilde u = -s\,u` (:func:`sign_flip`).

    Parameters
    ----------
    scale : float
        Factor ``s > 0`` on the reversed update (1, the papers' setting).

    Examples
    --------
    >>> SignFlip(scale=2.0).forge([np.zeros(2)], [np.array([1.0, -1.0])], None)[0]
    array([-2.,  2.])
    """

    needs_training: ClassVar[bool] = True
    scale: float = 1.0

    def __post_init__(self) -> None:
        """Check ``scale``."""
        check_number("scale", self.scale, above=0)

    def forge(
        self, global_weights: NDArrays, trained: NDArrays, rng: np.random.Generator | None
    ) -> NDArrays:
        """``G - s (X - G)``."""
        return sign_flip(global_weights, trained, self.scale)


class SignFlipClient(ModelPoisoningClient):
    """Train honestly, then return :func:`sign_flip` of the result while active.

    Parameters: the fields of :class:`SignFlip` (``scale``).
    """

    params_type = SignFlip
