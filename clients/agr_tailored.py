r"""AGR-tailored attack (Shejwalkar & Houmansadr, NDSS 2021): the scale searched against a rule.

The attackers simulate the named aggregation rule on the updates they know
plus their own crafted copies, and search the scale that deviates the
rule's output most from the honest mean. With ``perturbation="std"`` the
crafted update is ALIE's :math:`\mu - z \sigma` with :math:`z` tuned to the
rule (adaptive ALIE); with ``"unit_vec"`` or ``"sign"`` it is the
tailored counterpart of Min-Max (:mod:`clients.min_max`). The rules are
simulated here (clients never import ``strategies``); the tests compare
them with the defences' own implementations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from clients.min_max import check_search, perturbation, search_gamma
from clients.omniscient import Forger, OmniscientAttackClient

AGRS = ("krum", "median", "trimmed_mean", "mean")
"""Rules the attack can be tailored to."""


def krum_choice(rows: torch.Tensor, f: int) -> int:
    r"""Krum's row: the lowest sum of squared distances to its :math:`n - f - 2` nearest rows.

    At least one neighbour; ties go to the lower row (Blanchard et al., NeurIPS 2017).

    Examples
    --------
    >>> krum_choice(torch.tensor([[0.0], [0.2], [0.25], [5.0]]), 1)  # 0.2 and 0.25 tie
    1
    """
    x = rows.to(torch.float64)
    sq = (x * x).sum(dim=1)
    dist = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0.0)
    dist.fill_diagonal_(torch.inf)
    n = rows.shape[0]
    k = min(max(1, n - f - 2), n - 1)
    return int(dist.topk(k, dim=1, largest=False).values.sum(dim=1).argmin())


def simulate(rows: torch.Tensor, agr: str, f: int) -> torch.Tensor:
    r"""The output of rule ``agr`` on ``rows``, as the attackers simulate it.

    ``krum`` (:func:`krum_choice`), ``median`` (coordinate-wise, the mean of
    the two middle values for even :math:`n`), ``trimmed_mean`` (drop the
    :math:`\min(f, \lceil n/2 \rceil - 1)` largest and smallest values per
    coordinate) or ``mean``.

    Examples
    --------
    >>> simulate(torch.tensor([[0.0], [1.0], [9.0]]), "trimmed_mean", 1)
    tensor([1.])
    """
    if agr == "krum":
        return rows[krum_choice(rows, f)]
    if agr == "median":
        return rows.quantile(0.5, dim=0) if rows.shape[0] > 1 else rows[0]
    if agr == "trimmed_mean":
        n = rows.shape[0]
        b = min(f, (n - 1) // 2)
        return rows.sort(dim=0).values[b : n - b].mean(dim=0)
    return rows.mean(dim=0)


def deviation_search(deviation: Callable[[float], float], gamma_init: float, tau: float) -> float:
    """The scale in ``[0, 2 gamma_init]`` of largest deviation found (0 when none beats 0).

    The deviation is evaluated on the geometric grid ``2 gamma_init / 2^j``
    down to ``tau``; the bracket of the best grid scale (its two grid
    neighbours) is then narrowed by golden-section search to within
    ``tau``, and the best scale evaluated wins (ties to the larger). The
    authors' code instead halves a step and keeps a trial when it beats the
    previous trial, which can stop on a non-maximal scale when the deviation
    saturates (trimmed mean, median). Meant for deviations that grow, then
    level off or fall (coordinate-wise rules, whose outputs are monotone in
    the crafted value); Krum's is searched by selection instead.

    Examples
    --------
    >>> round(deviation_search(lambda g: min(g, 3.0) - 0.01 * g, 10.0, 1e-6), 3)
    3.0
    """
    seen: dict[float, float] = {0.0: deviation(0.0)}

    def value(gamma: float) -> float:
        if gamma not in seen:
            seen[gamma] = deviation(gamma)
        return seen[gamma]

    grid = []
    gamma = 2 * gamma_init
    while gamma >= tau:
        grid.append(gamma)
        gamma /= 2
    best = max(range(len(grid)), key=lambda i: (value(grid[i]), grid[i]))
    low = grid[best + 1] if best + 1 < len(grid) else 0.0
    high = grid[best - 1] if best > 0 else grid[0]
    ratio = (5**0.5 - 1) / 2
    while high - low > tau:
        left, right = high - ratio * (high - low), low + ratio * (high - low)
        if value(left) > value(right):
            high = right
        else:
            low = left
    return max(seen, key=lambda g: (seen[g], g))


def agr_tailored(
    reference: torch.Tensor,
    num_byzantine: int,
    agr: str = "krum",
    f: int | None = None,
    perturbation_kind: str = "unit_vec",
    gamma_init: float = 10.0,
    tau: float = 1e-5,
) -> torch.Tensor:
    r"""The crafted update :math:`\mu + \gamma p` with :math:`\gamma` tailored to rule ``agr``.

    .. math::
        \gamma = \arg\max_\gamma \big\lVert \mathrm{AGR}(\underbrace{v, \dots, v}_{c},
        g_1, \dots, g_k) - \mu \big\rVert_2, \qquad v = \mu + \gamma p

    over the known updates :math:`g_i` (mean :math:`\mu`), :math:`p` from
    :func:`~clients.min_max.perturbation`, :math:`\mathrm{AGR}` simulated by
    :func:`simulate` with the rule's Byzantine parameter ``f`` (default
    :math:`c`), :math:`\gamma \in [0, 2 \gamma_{init}]` from :func:`deviation_search`.
    Krum's output deviates by :math:`\gamma \lVert p \rVert` while it selects
    :math:`v`, so for Krum :math:`\gamma` is the largest scale Krum selects
    (:func:`~clients.min_max.search_gamma`, as the authors' Krum-tailored
    attack). Shejwalkar and Houmansadr, "Manipulating the Byzantine:
    Optimizing Model Poisoning Attacks and Defenses for Federated Learning",
    NDSS 2021, Section 4.2 (AGR-tailored).

    Raises
    ------
    ValueError
        If ``agr``, ``perturbation_kind``, ``f``, ``gamma_init`` or ``tau`` is invalid.

    Examples
    --------
    >>> g = torch.tensor([[1.0, 0.0], [1.2, 0.1], [0.8, -0.1], [1.0, 0.0]])
    >>> v = agr_tailored(g, 1, "mean")  # the mean has no defence: gamma reaches its cap
    >>> round(float(v[0]), 2)  # p = -mu / |mu|, gamma = 2 gamma_init = 20
    -19.0
    """
    if agr not in AGRS:
        raise ValueError(f"agr must be one of {', '.join(AGRS)}, got {agr!r}")
    if f is not None and (isinstance(f, bool) or not isinstance(f, int) or f < 0):
        raise ValueError(f"f must be a non-negative integer or None, got {f!r}")
    check_search(gamma_init, tau)
    byzantine = num_byzantine if f is None else f
    mu = reference.mean(dim=0)
    p = perturbation(reference, perturbation_kind)

    def rows(gamma: float) -> torch.Tensor:
        return torch.cat([(mu + gamma * p).expand(num_byzantine, -1), reference])

    if agr == "krum":

        def selected(gamma: float) -> bool:
            return krum_choice(rows(gamma), byzantine) < num_byzantine

        return mu + search_gamma(selected, gamma_init, tau) * p

    def deviation(gamma: float) -> float:
        out = simulate(rows(gamma), agr, byzantine)
        return float((out - mu).to(torch.float64).norm())

    return mu + deviation_search(deviation, gamma_init, tau) * p


@dataclass(frozen=True)
class AgrTailored:
    """:func:`agr_tailored` as an omniscient attack (see :mod:`clients.omniscient`).

    Parameters
    ----------
    agr : {"krum", "median", "trimmed_mean", "mean"}
        The rule the scale is tailored to.
    f : int, optional
        The rule's Byzantine parameter as the attackers assume it (Krum's
        ``f``, trimmed mean's ``b``); default: the number of active attackers.
    perturbation : {"unit_vec", "std", "sign"}
        The direction ``p``; ``"std"`` is adaptive ALIE.
    gamma_init, tau : float
        Start and tolerance of the search.
    """

    agr: str = "krum"
    f: int | None = None
    perturbation: str = "unit_vec"
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
        """Return :func:`agr_tailored` of the reference rows."""
        return agr_tailored(
            reference,
            num_byzantine,
            self.agr,
            self.f,
            self.perturbation,
            self.gamma_init,
            self.tau,
        )

    def forger(self) -> Forger:
        """:meth:`forge` (stateless)."""
        return self.forge


class AgrTailoredClient(OmniscientAttackClient):
    """Attack client for :func:`agr_tailored` (forged on the server; see :mod:`clients.omniscient`).

    Parameters: the fields of :class:`AgrTailored` and ``omniscient`` (honest
    updates, or the attackers' own, as reference).
    """

    attack_type = AgrTailored
