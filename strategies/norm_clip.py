"""Norm bounding: every update clipped to an L2 norm before the wrapped rule.

The server-side norm bound that Bagdasaryan et al. ("How To Backdoor
Federated Learning", AISTATS 2020) evaluate as a defence (with
:mod:`strategies.dp_noise` it is their "norm bound + weak DP" setting).

Why not Flower's ``DifferentialPrivacyServerSideFixedClipping``: its clip is
the same formula (FlatClip, ``u * min(1, S / ||u||)``, which the tests check
against Flower's ``clip_inputs_inplace``), but the wrapper cannot be one of
our transforms:

- it wraps a Flower ``Strategy`` at the ``aggregate_fit`` level and rewrites
  every ``FitRes`` before the inner strategy sees it, whereas flsec transforms
  compose at ``aggregate_updates(U, ctx)`` inside one strategy. Wrapping a
  flsec strategy with it would clip before our validation (a ``NaN`` or
  ``1e30`` reply would go through its float arithmetic first) and before the
  simulation's omniscient adversary rewrites its rows, so forged updates
  would escape the clip;
- it always adds noise to the new global parameters (all arrays, integer
  buffers included) with ``std = noise_multiplier * S / num_sampled_clients``
  drawn from NumPy's unseeded global generator, so runs are not reproducible
  from the seed, and the noise cannot be turned off independently of the
  clip or combined with another rule's post-transforms;
- it returns no model at all as soon as one client fails.

So both transforms are written here on ``U``, on the aggregation device; the
Flower wrapper's noise corresponds to :class:`~strategies.dp_noise.DPNoise`
with ``sigma = noise_multiplier * S / n`` and ``server_lr = 1``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import row_norms
from strategies.base import RobustStrategy, WrappingStrategy


def clip_norms(updates: torch.Tensor, max_norm: float) -> torch.Tensor:
    r"""Clip every row to L2 norm at most ``max_norm``.

    .. math:: u_i \leftarrow u_i \cdot \min\left(1, \frac{S}{\lVert u_i \rVert_2}\right)

    Bagdasaryan, Veit, Hua, Estrin and Shmatikov, "How To Backdoor Federated
    Learning", AISTATS 2020 (norm-bounding defence; the same FlatClip as
    McMahan et al., "Learning Differentially Private Recurrent Language
    Models", ICLR 2018).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    max_norm : float
        The bound ``S > 0``.

    Returns
    -------
    torch.Tensor
        A new matrix, shape ``(n, d)``; zero rows stay zero.

    Examples
    --------
    >>> clip_norms(torch.tensor([[3.0, 4.0], [0.3, 0.4]]), max_norm=1.0)
    tensor([[0.6000, 0.8000],
            [0.3000, 0.4000]])
    """
    norms = row_norms(updates)
    scale = (max_norm / norms.clamp(min=max_norm)).to(updates.dtype)
    return updates * scale[:, None]


class NormClip(WrappingStrategy):
    """Clip every update to L2 norm ``max_norm`` before the wrapped rule (:func:`clip_norms`).

    Rows keep their identity, so the inner rule's selection and the context
    pass through unchanged.

    Parameters
    ----------
    inner : RobustStrategy
        The rule applied to the clipped rows.
    max_norm : float
        The norm bound ``S > 0``. It depends on the model and the data, so
        there is no default.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(self, inner: RobustStrategy, *, max_norm: float, **kwargs: Any) -> None:
        super().__init__(inner, **kwargs)
        if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)):
            raise ValueError(f"max_norm must be a number, got {max_norm!r}")
        if not (math.isfinite(max_norm) and max_norm > 0):
            raise ValueError(f"max_norm must be positive and finite, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Clip the rows, then run the inner rule."""
        return self.inner.aggregate_updates(clip_norms(updates, self.max_norm), ctx)
