"""A Little Is Enough (Baruch, Baruch & Goldberg, NeurIPS 2019), an omniscient attack."""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import torch

from clients.omniscient import Forger, OmniscientAttackClient, coordinate_std


def alie_z(num_total: int, num_byzantine: int) -> float:
    r"""The number of standard deviations ``z_max`` of the ALIE attack.

    .. math::

        s = \lfloor n/2 + 1 \rfloor - f, \qquad
        z_{\max} = \Phi^{-1}\!\left(\frac{n - f - s}{n - f}\right)

    ``s`` is the number of honest workers the attackers need on their side
    for a majority; ``z_max`` puts the forged value beyond a fraction
    ``s / (n - f)`` of the honest values (``Phi`` is the standard normal
    CDF). This is the ratio over the ``n - f`` honest workers used by the
    reference implementations (Karimireddy et al.'s code for ICLR 2022, Blades,
    FLlib); Algorithm 3 of the paper prints it as ``(n - s) / n``. The ratio is
    clipped to ``[1 / (2h), 1 - 1 / (2h)]`` with ``h = max(n - f, 1)`` (half a
    worker from either end), which keeps ``z`` finite when the attackers alone
    are a majority (``s <= 0``).

    Parameters
    ----------
    num_total : int
        Number of workers ``n`` in the round.
    num_byzantine : int
        Number of attackers ``f``.

    Returns
    -------
    float
        ``z_max``.

    Raises
    ------
    ValueError
        If ``num_total < 1`` or ``num_byzantine`` is outside ``0..num_total``.

    Examples
    --------
    >>> round(alie_z(25, 5), 3)
    0.253
    """
    if num_total < 1:
        raise ValueError(f"num_total must be >= 1, got {num_total!r}")
    if not 0 <= num_byzantine <= num_total:
        raise ValueError(f"num_byzantine must be in 0..{num_total}, got {num_byzantine!r}")
    honest = max(num_total - num_byzantine, 1)
    supporters = math.floor(num_total / 2 + 1) - num_byzantine
    ratio = (honest - supporters) / honest
    edge = 1 / (2 * honest)
    return NormalDist().inv_cdf(min(max(ratio, edge), 1 - edge))


def alie(
    reference: torch.Tensor, num_byzantine: int, num_total: int, z: float | None = None
) -> torch.Tensor:
    r"""A Little Is Enough: the honest mean moved ``z`` standard deviations per coordinate.

    .. math:: v_j = \mu_j - z\, \sigma_j

    with ``mu`` and ``sigma`` the coordinate-wise mean and unbiased standard
    deviation (:func:`~clients.omniscient.coordinate_std`) of the reference
    updates, and ``z`` from
    :func:`alie_z` unless given. Every attacker sends ``v``. Baruch, Baruch &
    Goldberg, "A Little Is Enough: Circumventing Defenses For Distributed
    Learning", NeurIPS 2019.

    Parameters
    ----------
    reference : torch.Tensor
        Updates the attackers know, shape ``(k, d)``: the honest ones
        (omniscient) or the attackers' own. With ``k = 1``, ``sigma = 0``.
    num_byzantine : int
        Number of attackers ``f``.
    num_total : int
        Number of workers ``n``.
    z : float, optional
        A fixed number of standard deviations, overriding :func:`alie_z`.

    Returns
    -------
    torch.Tensor
        The forged update, shape ``(d,)``.

    Raises
    ------
    ValueError
        If ``z`` is given and not finite, or the counts are invalid.

    Examples
    --------
    >>> alie(torch.tensor([[0.0, 1.0], [2.0, 1.0]]), 1, 3, z=1.0)
    tensor([-0.4142,  1.0000])
    """
    if z is None:
        z = alie_z(num_total, num_byzantine)
    elif not math.isfinite(z):
        raise ValueError(f"z must be a finite number, got {z!r}")
    return reference.mean(dim=0) - z * coordinate_std(reference)


@dataclass(frozen=True)
class Alie:
    """:func:`alie` as an omniscient attack (see :mod:`clients.omniscient`).

    Parameters
    ----------
    z : float, optional
        Fixed number of standard deviations; by default :func:`alie_z` of the
        round's number of clients and of active attackers.
    """

    z: float | None = None

    def forge(
        self,
        reference: torch.Tensor,
        reference_ids: list[int],
        num_byzantine: int,
        num_total: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return :func:`alie` of the reference rows."""
        return alie(reference, num_byzantine, num_total, self.z)

    def forger(self) -> Forger:
        """:meth:`forge` (stateless)."""
        return self.forge


class AlieClient(OmniscientAttackClient):
    """Attack client for :func:`alie` (forged on the server; see :mod:`clients.omniscient`).

    Parameters: the fields of :class:`Alie` (``z``) and ``omniscient``
    (statistics of the honest updates, or of the attackers' own).
    """

    attack_type = Alie
