"""Inner product manipulation (Xie, Koyejo & Gupta, UAI 2019), an omniscient attack."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from clients.omniscient import Forger, OmniscientAttackClient


def ipm(reference: torch.Tensor, epsilon: float = 0.1) -> torch.Tensor:
    r"""Inner product manipulation: the scaled opposite of the honest mean.

    .. math:: v = -\varepsilon \, \frac{1}{k} \sum_{i=1}^{k} g_i

    Every attacker sends ``v``. With a small ``epsilon`` the aggregate's inner
    product with the true gradient turns negative while ``v`` stays close to
    the honest updates. Xie, Koyejo & Gupta, "Fall of Empires: Breaking
    Byzantine-tolerant SGD by Inner Product Manipulation", UAI 2019, use
    ``epsilon = 0.1`` and ``epsilon = 100``.

    Parameters
    ----------
    reference : torch.Tensor
        Updates the attackers know, shape ``(k, d)``: the honest ones
        (omniscient) or the attackers' own.
    epsilon : float
        Scale ``> 0`` of the reversed mean.

    Returns
    -------
    torch.Tensor
        The forged update, shape ``(d,)``.

    Raises
    ------
    ValueError
        If ``epsilon`` is not a finite positive number.

    Examples
    --------
    >>> ipm(torch.tensor([[1.0, 2.0], [3.0, 6.0]]), epsilon=0.5)
    tensor([-1., -2.])
    """
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    return -epsilon * reference.mean(dim=0)


@dataclass(frozen=True)
class Ipm:
    """:func:`ipm` as an omniscient attack (see :mod:`clients.omniscient`).

    Parameters
    ----------
    epsilon : float
        Scale of the reversed mean (0.1 or 100 in the paper).
    """

    epsilon: float = 0.1

    def forge(
        self,
        reference: torch.Tensor,
        reference_ids: list[int],
        num_byzantine: int,
        num_total: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return :func:`ipm` of the reference rows."""
        return ipm(reference, self.epsilon)

    def forger(self) -> Forger:
        """:meth:`forge` (stateless)."""
        return self.forge


class IpmClient(OmniscientAttackClient):
    """Attack client for :func:`ipm` (forged on the server; see :mod:`clients.omniscient`).

    Parameters: the fields of :class:`Ipm` (``epsilon``) and ``omniscient``
    (mean of the honest updates, or of the attackers' own).
    """

    attack_type = Ipm
