"""The Min-Sum attack (Shejwalkar & Houmansadr, NDSS 2021), an omniscient attack."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.min_max import (
    DistanceTerms,
    MinMax,
    check_search,
    distance_terms,
    perturbation,
    search_gamma,
)
from clients.omniscient import OmniscientAttackClient


def min_sum_gamma(terms: DistanceTerms, gamma_init: float = 10.0, tau: float = 1e-5) -> float:
    r"""Largest ``gamma`` found for the Min-Sum constraint.

    .. math::

        \sum_i \lVert \mu + \gamma p - g_i \rVert_2^2
        \le \max_i \sum_j \lVert g_i - g_j \rVert_2^2

    Parameters
    ----------
    terms : DistanceTerms
        From :func:`~clients.min_max.distance_terms`.
    gamma_init, tau : float
        See :func:`~clients.min_max.search_gamma`.

    Returns
    -------
    float
        ``gamma``.

    Examples
    --------
    >>> t = distance_terms(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0.0, 1.0]))
    >>> round(min_sum_gamma(t), 3)  # 2 + 2 g^2 <= 4
    1.0
    """
    check_search(gamma_init, tau)
    bound = float(terms.pairwise.sum(dim=1).max())
    return search_gamma(lambda g: float(terms.candidate(g).sum()) <= bound, gamma_init, tau)


def min_sum(
    reference: torch.Tensor,
    perturbation_kind: str = "std",
    gamma_init: float = 10.0,
    tau: float = 1e-5,
) -> torch.Tensor:
    r"""Min-Sum: the mean moved along ``p`` while its distance sum stays typical.

    .. math::

        v = \mu + \gamma p, \qquad
        \gamma = \arg\max_\gamma \; \sum_i \lVert v - g_i \rVert_2^2
        \le \max_i \sum_j \lVert g_i - g_j \rVert_2^2

    Every attacker sends ``v``: its sum of squared distances to the honest
    updates is no larger than the largest such sum of an honest update
    (the paper's formulation; the authors' released code compares with the
    smallest sum instead, a stricter bound). ``gamma`` comes from the
    authors' halving search (:func:`~clients.min_max.search_gamma`, start 10,
    tolerance 1e-5); the distances from one Gram product. Shejwalkar &
    Houmansadr, "Manipulating the Byzantine: Optimizing Model Poisoning
    Attacks and Defenses for Federated Learning", NDSS 2021.

    Parameters
    ----------
    reference : torch.Tensor
        Updates the attackers know, shape ``(k, d)``: the honest ones
        (omniscient) or the attackers' own.
    perturbation_kind : {"std", "sign", "unit_vec"}
        ``p`` (:func:`~clients.min_max.perturbation`); ``"std"`` by default.
    gamma_init : float
        First ``gamma`` tried (the result is below ``2 gamma_init``).
    tau : float
        Search tolerance.

    Returns
    -------
    torch.Tensor
        The forged update, shape ``(d,)``.

    Examples
    --------
    >>> v = min_sum(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), "sign")
    >>> [round(x, 3) for x in v.tolist()]
    [0.0, 0.0]
    """
    check_search(gamma_init, tau)
    p = perturbation(reference, perturbation_kind)
    gamma = min_sum_gamma(distance_terms(reference, p), gamma_init, tau)
    return reference.mean(dim=0) + gamma * p


@dataclass(frozen=True)
class MinSum(MinMax):
    """:func:`min_sum` as an omniscient attack: :class:`MinMax`'s parameters, another bound."""

    def forge(
        self,
        reference: torch.Tensor,
        reference_ids: list[int],
        num_byzantine: int,
        num_total: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return :func:`min_sum` of the reference rows."""
        return min_sum(reference, self.perturbation, self.gamma_init, self.tau)


class MinSumClient(OmniscientAttackClient):
    """Attack client for :func:`min_sum` (forged on the server; see :mod:`clients.omniscient`).

    Same parameters as :class:`~clients.min_max.MinMaxClient`; only the
    constraint on ``gamma`` differs.
    """

    attack_type = MinSum
