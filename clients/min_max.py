"""The Min-Max attack (Shejwalkar & Houmansadr, NDSS 2021), an omniscient attack.

Also holds what Min-Sum (:mod:`clients.min_sum`) shares with it: the
perturbation vectors, the distance terms from one Gram product and the
authors' search for the scale ``gamma``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from clients.normalized_mean import unit_rows
from clients.omniscient import Forger, OmniscientAttackClient, coordinate_std

PERTURBATIONS = ("std", "sign", "unit_vec")
"""Perturbation kinds: ``-std``, ``-sign(mean)`` and ``-mean / ||mean||``."""


def perturbation(reference: torch.Tensor, kind: str = "std") -> torch.Tensor:
    r"""The direction ``p`` the attack moves the honest mean along.

    .. math::

        p_{\mathrm{std}} = -\sigma, \qquad
        p_{\mathrm{sign}} = -\operatorname{sign}(\mu), \qquad
        p_{\mathrm{unit\_vec}} = -\mu / \lVert \mu \rVert_2

    with ``mu`` and ``sigma`` the coordinate-wise mean and unbiased standard
    deviation of the reference updates (``sigma = 0`` for one row; a zero
    mean gives a zero unit vector).

    Parameters
    ----------
    reference : torch.Tensor
        Shape ``(k, d)``.
    kind : {"std", "sign", "unit_vec"}
        Which perturbation.

    Returns
    -------
    torch.Tensor
        ``p``, shape ``(d,)``.

    Raises
    ------
    ValueError
        If ``kind`` is unknown.

    Examples
    --------
    >>> perturbation(torch.tensor([[1.0, -3.0], [3.0, -1.0]]), "sign")
    tensor([-1.,  1.])
    """
    if kind not in PERTURBATIONS:
        raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {kind!r}")
    mean = reference.mean(dim=0)
    if kind == "std":
        return -coordinate_std(reference)
    if kind == "sign":
        return -torch.sign(mean)
    return -unit_rows(mean[None, :])[0]


@dataclass
class DistanceTerms:
    r"""Squared distances between the candidate ``mu + gamma p`` and the reference rows.

    .. math::

        \lVert \mu + \gamma p - g_i \rVert^2 = a_i + 2 \gamma b_i + \gamma^2 c

    Parameters
    ----------
    a : torch.Tensor
        ``||mu - g_i||^2``, shape ``(k,)``, float64.
    b : torch.Tensor
        ``<p, mu - g_i>``, shape ``(k,)``, float64.
    c : float
        ``||p||^2``.
    pairwise : torch.Tensor
        ``||g_i - g_j||^2``, shape ``(k, k)``, float64.
    """

    a: torch.Tensor
    b: torch.Tensor
    c: float
    pairwise: torch.Tensor

    def candidate(self, gamma: float) -> torch.Tensor:
        """``||mu + gamma p - g_i||^2`` for every reference row, shape ``(k,)``."""
        return self.a + 2 * gamma * self.b + gamma * gamma * self.c


def distance_terms(reference: torch.Tensor, p: torch.Tensor) -> DistanceTerms:
    """Compute :class:`DistanceTerms` with one Gram product of the centred rows.

    The centred rows and ``p`` are divided by their largest absolute entry
    before the float32 products, and the results are rescaled in float64, so
    updates with entries near ``1e30`` do not overflow.

    Parameters
    ----------
    reference : torch.Tensor
        Rows ``g_i``, shape ``(k, d)``.
    p : torch.Tensor
        Perturbation, shape ``(d,)``.

    Returns
    -------
    DistanceTerms
        The terms of every squared distance.

    Examples
    --------
    >>> t = distance_terms(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([1.0, 0.0]))
    >>> t.a.tolist(), t.b.tolist(), t.c, t.pairwise[0, 1].item()
    ([1.0, 1.0], [1.0, -1.0], 1.0, 4.0)
    """
    centred = reference - reference.mean(dim=0)
    scale = float(centred.abs().max()) if centred.numel() else 0.0
    p_scale = float(p.abs().max()) if p.numel() else 0.0
    scale = scale if scale > 0 else 1.0
    p_scale = p_scale if p_scale > 0 else 1.0
    unit = centred / scale
    unit_p = p / p_scale
    gram = (unit @ unit.T).double() * scale**2
    a = gram.diagonal().clone()
    pairwise = (a[:, None] + a[None, :] - 2 * gram).clamp_min(0.0)
    pairwise.fill_diagonal_(0.0)
    b = -(unit @ unit_p).double() * (scale * p_scale)
    c = float(unit_p.double() @ unit_p.double()) * p_scale**2
    return DistanceTerms(a=a, b=b, c=c, pairwise=pairwise)


def search_gamma(feasible: Callable[[float], bool], gamma_init: float, tau: float) -> float:
    """The authors' halving search for the largest feasible ``gamma``.

    Starting at ``gamma_init`` with step ``gamma_init / 2``, a feasible
    ``gamma`` is kept and increased by the step, an infeasible one decreased;
    the step halves every time, until two successive values are within
    ``tau``. The result lies in ``[0, 2 gamma_init)``; 0 when no tried value
    is feasible. Feasible sets of the form ``[0, gamma*]`` give ``gamma*`` to
    within ``2 tau``.

    Parameters
    ----------
    feasible : callable
        ``feasible(gamma) -> bool``.
    gamma_init : float
        First value tried (> 0).
    tau : float
        Tolerance (> 0).

    Returns
    -------
    float
        The last feasible value tried.

    Examples
    --------
    >>> round(search_gamma(lambda g: g <= 3.0, 10.0, 1e-5), 4)
    3.0
    """
    gamma, step, best = gamma_init, gamma_init / 2, 0.0
    while abs(best - gamma) > tau and step > 0:
        if feasible(gamma):
            best = gamma
            gamma += step
        else:
            gamma -= step
        step /= 2
    return best


def check_search(gamma_init: float, tau: float) -> None:
    """Raise ValueError unless ``gamma_init`` and ``tau`` are finite and positive."""
    if not (math.isfinite(gamma_init) and gamma_init > 0):
        raise ValueError(f"gamma_init must be a finite number > 0, got {gamma_init!r}")
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a finite number > 0, got {tau!r}")


def min_max_gamma(terms: DistanceTerms, gamma_init: float = 10.0, tau: float = 1e-5) -> float:
    r"""Largest ``gamma`` found for the Min-Max constraint.

    .. math::

        \max_i \lVert \mu + \gamma p - g_i \rVert_2 \le \max_{i,j} \lVert g_i - g_j \rVert_2

    Parameters
    ----------
    terms : DistanceTerms
        From :func:`distance_terms`.
    gamma_init, tau : float
        See :func:`search_gamma`.

    Returns
    -------
    float
        ``gamma``.

    Examples
    --------
    >>> t = distance_terms(torch.tensor([[0.0, 0.0], [2.0, 0.0]]), torch.tensor([0.0, 1.0]))
    >>> round(min_max_gamma(t), 3)  # 1 + g^2 <= 4
    1.732
    """
    check_search(gamma_init, tau)
    bound = float(terms.pairwise.max())
    return search_gamma(lambda g: float(terms.candidate(g).max()) <= bound, gamma_init, tau)


def min_max(
    reference: torch.Tensor,
    perturbation_kind: str = "std",
    gamma_init: float = 10.0,
    tau: float = 1e-5,
) -> torch.Tensor:
    r"""Min-Max: the mean moved along ``p`` as far as the honest spread allows.

    .. math::

        v = \mu + \gamma p, \qquad
        \gamma = \arg\max_\gamma \; \max_i \lVert v - g_i \rVert_2
        \le \max_{i,j} \lVert g_i - g_j \rVert_2

    Every attacker sends ``v``: its largest distance to an honest update is
    no larger than the largest distance between two honest updates.
    ``gamma`` comes from the authors' halving search (:func:`search_gamma`,
    start 10, tolerance 1e-5 as in their code); the distances from one Gram
    product (:func:`distance_terms`). Shejwalkar & Houmansadr, "Manipulating
    the Byzantine: Optimizing Model Poisoning Attacks and Defenses for
    Federated Learning", NDSS 2021.

    Parameters
    ----------
    reference : torch.Tensor
        Updates the attackers know, shape ``(k, d)``: the honest ones
        (omniscient) or the attackers' own.
    perturbation_kind : {"std", "sign", "unit_vec"}
        ``p`` (:func:`perturbation`); ``"std"`` by default.
    gamma_init : float
        First ``gamma`` tried (10 in the authors' code; the result is below
        ``2 gamma_init``).
    tau : float
        Search tolerance.

    Returns
    -------
    torch.Tensor
        The forged update, shape ``(d,)``.

    Examples
    --------
    >>> g = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    >>> v = min_max(g, "sign")  # ||v - (2, 0)|| = ||(2, 0) - (0, 2)|| = sqrt(8)
    >>> [round(x, 3) for x in v.tolist()]
    [-0.732, -0.732]
    """
    check_search(gamma_init, tau)
    p = perturbation(reference, perturbation_kind)
    gamma = min_max_gamma(distance_terms(reference, p), gamma_init, tau)
    return reference.mean(dim=0) + gamma * p


@dataclass(frozen=True)
class MinMax:
    """:func:`min_max` as an omniscient attack (see :mod:`clients.omniscient`).

    Parameters
    ----------
    perturbation : {"std", "sign", "unit_vec"}
        The direction ``p``.
    gamma_init, tau : float
        Start and tolerance of the search for ``gamma``.
    """

    perturbation: str = "std"
    gamma_init: float = 10.0
    tau: float = 1e-5

    def forge(
        self,
        reference: torch.Tensor,
        reference_ids: list[int],
        num_byzantine: int,
        num_total: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return :func:`min_max` of the reference rows."""
        return min_max(reference, self.perturbation, self.gamma_init, self.tau)

    def forger(self) -> Forger:
        """:meth:`forge` (stateless)."""
        return self.forge


class MinMaxClient(OmniscientAttackClient):
    """Attack client for :func:`min_max` (forged on the server; see :mod:`clients.omniscient`).

    Parameters: the fields of :class:`MinMax` and ``omniscient`` (honest
    updates, or the attackers' own, as reference).
    """

    attack_type = MinMax
