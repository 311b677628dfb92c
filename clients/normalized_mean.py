"""The omniscient attack on the normalized mean (He, Karimireddy & Jaggi, 2020)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.omniscient import Forger, OmniscientAttackClient


def unit_rows(updates: torch.Tensor) -> torch.Tensor:
    r"""Each row divided by its Euclidean norm; zero rows stay zero.

    .. math:: \hat g_i = g_i / \lVert g_i \rVert_2

    Rows are first divided by their largest absolute entry, so the norm of
    a row with entries near ``1e30`` does not overflow in float32.

    Parameters
    ----------
    updates : torch.Tensor
        Shape ``(k, d)``.

    Returns
    -------
    torch.Tensor
        Shape ``(k, d)``, rows of norm 1 or 0.

    Examples
    --------
    >>> unit_rows(torch.tensor([[3.0, 4.0], [0.0, 0.0]]))
    tensor([[0.6000, 0.8000],
            [0.0000, 0.0000]])
    """
    scale = updates.abs().amax(dim=1, keepdim=True)
    scaled = updates / torch.where(scale > 0, scale, torch.ones_like(scale))
    norms = torch.linalg.vector_norm(scaled, dim=1, keepdim=True)
    return scaled / torch.where(norms > 0, norms, torch.ones_like(norms))


def normalized_mean_attack(reference: torch.Tensor) -> torch.Tensor:
    r"""The opposite of the sum of the normalized honest updates.

    .. math:: v = -\sum_{i=1}^{k} \frac{g_i}{\lVert g_i \rVert_2}

    Every attacker sends ``v``. The normalized mean aggregator averages
    ``g / ||g||`` over all clients, so the attackers' unit vectors point
    against the honest direction it would otherwise follow. Zero updates
    contribute nothing. He, Karimireddy & Jaggi, "Byzantine-Robust Learning
    on Heterogeneous Datasets via Resampling", arXiv:2006.09365v1, 2020 (the
    first version of the bucketing paper, ICLR 2022).

    Parameters
    ----------
    reference : torch.Tensor
        Updates the attackers know, shape ``(k, d)``: the honest ones
        (omniscient) or the attackers' own.

    Returns
    -------
    torch.Tensor
        The forged update, shape ``(d,)``.

    Examples
    --------
    >>> normalized_mean_attack(torch.tensor([[3.0, 4.0], [0.0, 2.0]]))
    tensor([-0.6000, -1.8000])
    """
    return -unit_rows(reference).sum(dim=0)


@dataclass(frozen=True)
class NormalizedMean:
    """:func:`normalized_mean_attack` as an omniscient attack (no parameters)."""

    def forge(
        self,
        reference: torch.Tensor,
        reference_ids: list[int],
        num_byzantine: int,
        num_total: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return :func:`normalized_mean_attack` of the reference rows."""
        return normalized_mean_attack(reference)

    def forger(self) -> Forger:
        """:meth:`forge` (stateless)."""
        return self.forge


class NormalizedMeanClient(OmniscientAttackClient):
    """Attack client for :func:`normalized_mean_attack` (forged on the server).

    See :mod:`clients.omniscient` for the collusion model. Parameters as for
    :class:`~clients.omniscient.OmniscientAttackClient` (``omniscient``).
    """

    attack_type = NormalizedMean
