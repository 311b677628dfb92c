"""Fang et al.'s local model poisoning attacks on Krum and on trimmed mean / median (omniscient).

Fang, Cao, Jia and Gong, "Local Model Poisoning Attacks to Byzantine-Robust
Federated Learning", USENIX Security 2020, Sections 3.3-3.5. Written in
update space (``u = w - w_global``, as in the authors' gradient-based code):
the "before-attack global model" is the current one, so the crafted local
model ``w_Re - lambda s`` is the update ``-lambda s``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch

from clients.attack import build_part
from clients.omniscient import (
    ColludingAdversary,
    Collusion,
    Forger,
    OmniscientAttackClient,
    colluding_adversary,
    coordinate_std,
)

AGRS = ("krum", "trimmed_mean", "median")
"""Rules the attack is tailored to (the median gets the trimmed-mean attack, as in the paper)."""


def change_direction(reference: torch.Tensor) -> torch.Tensor:
    r"""The estimated change direction :math:`s = \operatorname{sign}(\bar u)` (0 counts as +1).

    Fang et al. take the sign of the global model's change without attack;
    here the mean of the updates the attackers know stands in for it.

    Examples
    --------
    >>> change_direction(torch.tensor([[1.0, -2.0, 0.0], [1.0, 0.0, 0.0]]))
    tensor([ 1., -1.,  1.])
    """
    mean = reference.mean(dim=0)
    return torch.where(mean < 0, -1.0, 1.0).to(reference.dtype)


def krum_selects_crafted(
    reference: torch.Tensor, s: torch.Tensor, lam: float, num_byzantine: int
) -> bool:
    r"""Whether Krum picks one of ``num_byzantine`` copies of :math:`-\lambda s` among the rows.

    Krum with :math:`f = c` on the :math:`m = k + c` rows: a row's score is
    the sum of its squared distances to its :math:`\max(1, m - c - 2)`
    nearest other rows; the lowest score wins (ties to the crafted copies,
    which come first). The squared distances of the crafted row are
    :math:`\lambda^2 \lVert s \rVert^2 + 2 \lambda\, s \cdot u_i + \lVert u_i \rVert^2`,
    computed in float64 without building the rows.

    Examples
    --------
    >>> r = torch.tensor([[0.1], [-0.1], [0.3]])
    >>> s = torch.ones(1)
    >>> krum_selects_crafted(r, s, 0.05, 1), krum_selects_crafted(r, s, 9.0, 1)
    (True, False)
    """
    c = num_byzantine
    x = reference.to(torch.float64)
    k = x.shape[0]
    m = k + c
    sq = (x * x).sum(dim=1)
    honest = (sq[:, None] + sq[None, :] - 2 * x @ x.T).clamp_min(0.0)
    s64 = s.to(torch.float64)
    to_crafted = (lam * lam * float(s64 @ s64) + 2 * lam * (x @ s64) + sq).clamp_min(0.0)
    full = torch.zeros((m, m), dtype=torch.float64, device=x.device)
    full[c:, c:] = honest
    full[:c, c:] = to_crafted[None, :]
    full[c:, :c] = to_crafted[:, None]
    full.fill_diagonal_(math.inf)
    neighbours = min(max(1, m - c - 2), m - 1)
    scores = full.topk(neighbours, dim=1, largest=False).values.sum(dim=1)
    return bool(int(torch.argmin(scores)) < c)


def krum_lambda_bound(reference: torch.Tensor, num_byzantine: int) -> float:
    r"""Fang et al.'s upper bound on :math:`\lambda` for the Krum attack (Section 3.3).

    .. math::
        \lambda \le \frac{1}{(m - 2c - 1)\sqrt d} \min_{i} \sum_{l \in \Gamma_i^{m-c-2}}
        \lVert u_l - u_i \rVert + \frac{1}{\sqrt d} \max_i \lVert u_i \rVert

    over the known updates :math:`u_i`, :math:`\Gamma_i^{m-c-2}` the
    :math:`m - c - 2` known updates nearest to :math:`u_i`; the counts are
    at least 1 (the partial-knowledge setting has :math:`m = 2c`).

    Examples
    --------
    >>> round(krum_lambda_bound(torch.tensor([[0.0, 0.0], [3.0, 4.0]]), 1), 4)  # 5/sqrt2 + 5/sqrt2
    7.0711
    """
    x = reference.to(torch.float64)
    k, d = x.shape
    c = num_byzantine
    m = k + c
    dist = torch.cdist(x, x)
    dist.fill_diagonal_(math.inf)
    neighbours = min(max(1, m - c - 2), k - 1)
    spread = dist.topk(neighbours, dim=1, largest=False).values.sum(dim=1).min() if k > 1 else 0.0
    return float(spread) / (max(1, m - 2 * c - 1) * math.sqrt(d)) + float(
        x.norm(dim=1).max()
    ) / math.sqrt(d)


def fang_krum(reference: torch.Tensor, num_byzantine: int, epsilon: float = 1e-5) -> torch.Tensor:
    r"""Fang's attack on Krum: the largest :math:`\lambda` whose :math:`-\lambda s` Krum selects.

    .. math:: u' = -\lambda s, \qquad s = \operatorname{sign}(\bar u)

    :math:`\lambda` starts at :func:`krum_lambda_bound` and halves until Krum
    (with :math:`f = c`) selects the crafted update among the known ones
    (:func:`krum_selects_crafted`) or :math:`\lambda < \varepsilon`. Every
    attacker sends :math:`u'` (the paper's other :math:`c - 1` crafted models
    lie within :math:`\varepsilon` of it; here they are copies). Full
    knowledge: ``reference`` is the honest updates; partial knowledge: the
    attackers' own before-attack updates.

    Examples
    --------
    >>> fang_krum(torch.tensor([[0.1], [-0.1], [0.3]]), 1).tolist()  # bound 0.5, halved once
    [-0.25]
    """
    s = change_direction(reference)
    lam = krum_lambda_bound(reference, num_byzantine)
    while lam >= epsilon and not krum_selects_crafted(reference, s, lam, num_byzantine):
        lam /= 2
    return -lam * s


def fang_trimmed_mean(
    reference: torch.Tensor,
    num_byzantine: int,
    generator: torch.Generator,
    full_knowledge: bool = True,
    b: float = 2.0,
) -> torch.Tensor:
    r"""Fang's attack on trimmed mean and median: every coordinate pushed against :math:`s`.

    Full knowledge, with :math:`u^{max}_j, u^{min}_j` the largest and
    smallest known update of coordinate :math:`j`, each attacker draws
    uniformly

    .. math::
        u'_j \in \begin{cases}
        [u^{max}_j, b\, u^{max}_j] \text{ or } [u^{max}_j, u^{max}_j / b] & s_j = -1
        \ (u^{max}_j > 0 \text{ or not}) \\
        [u^{min}_j / b, u^{min}_j] \text{ or } [b\, u^{min}_j, u^{min}_j] & s_j = 1
        \ (u^{min}_j > 0 \text{ or not})
        \end{cases}

    (Section 3.4, :math:`b = 2`). Partial knowledge, with :math:`\mu_j,
    \sigma_j` the mean and standard deviation of the attackers' own updates:
    :math:`u'_j \in [\mu_j + 3\sigma_j, \mu_j + 4\sigma_j]` when
    :math:`s_j = -1`, :math:`[\mu_j - 4\sigma_j, \mu_j - 3\sigma_j]` otherwise.

    Returns
    -------
    torch.Tensor
        One row per attacker, shape ``(num_byzantine, d)``.

    Examples
    --------
    >>> r = torch.tensor([[1.0, -1.0], [2.0, -3.0]])
    >>> u = fang_trimmed_mean(r, 3, torch.Generator().manual_seed(0))
    >>> bool(((u[:, 0] >= 0.5) & (u[:, 0] <= 1.0)).all())  # s = +1, min 1 > 0: [1/2, 1]
    True
    >>> bool(((u[:, 1] >= -1.0) & (u[:, 1] <= -0.5)).all())  # s = -1, max -1 <= 0: [-1, -1/2]
    True
    """
    s = change_direction(reference)
    draw = torch.rand((num_byzantine, reference.shape[1]), generator=generator).to(reference)
    if full_knowledge:
        top, bottom = reference.amax(dim=0), reference.amin(dim=0)
        up_lo, up_hi = top, torch.where(top > 0, b * top, top / b)
        down_lo, down_hi = torch.where(bottom > 0, bottom / b, b * bottom), bottom
    else:
        mean, std = reference.mean(dim=0), coordinate_std(reference)
        up_lo, up_hi = mean + 3 * std, mean + 4 * std
        down_lo, down_hi = mean - 4 * std, mean - 3 * std
    low = torch.where(s < 0, up_lo, down_lo)
    high = torch.where(s < 0, up_hi, down_hi)
    return low + draw * (high - low)


def fang(
    reference: torch.Tensor,
    num_byzantine: int,
    generator: torch.Generator,
    agr: str = "krum",
    full_knowledge: bool = True,
    b: float = 2.0,
    epsilon: float = 1e-5,
) -> torch.Tensor:
    """Fang's attack tailored to ``agr``: :func:`fang_krum` or :func:`fang_trimmed_mean`.

    Raises
    ------
    ValueError
        If ``agr`` is unknown, ``b <= 1`` or ``epsilon <= 0``.
    """
    if agr not in AGRS:
        raise ValueError(f"agr must be one of {', '.join(AGRS)}, got {agr!r}")
    if not (math.isfinite(b) and b > 1):
        raise ValueError(f"b must be a finite number > 1, got {b!r}")
    if not (math.isfinite(epsilon) and epsilon > 0):
        raise ValueError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if agr == "krum":
        return fang_krum(reference, num_byzantine, epsilon)
    return fang_trimmed_mean(reference, num_byzantine, generator, full_knowledge, b)


@dataclass(frozen=True)
class Fang:
    """:func:`fang` as an omniscient attack (see :mod:`clients.omniscient`).

    The knowledge setting is :class:`~clients.omniscient.Collusion`'s
    ``omniscient``: the reference rows and the forging formula both follow it
    (:func:`fang_adversary`).

    Parameters
    ----------
    agr : {"krum", "trimmed_mean", "median"}
        The aggregation rule attacked.
    b : float
        The trimmed-mean attack's scale (> 1; paper: 2).
    epsilon : float
        Smallest ``lambda`` the Krum attack tries (paper: 1e-5).
    """

    agr: str = "krum"
    b: float = 2.0
    epsilon: float = 1e-5

    def forge(
        self,
        reference: torch.Tensor,
        reference_ids: list[int],
        num_byzantine: int,
        num_total: int,
        generator: torch.Generator,
        full_knowledge: bool = True,
    ) -> torch.Tensor:
        """Return :func:`fang` of the reference rows (full or partial knowledge)."""
        return fang(
            reference, num_byzantine, generator, self.agr, full_knowledge, self.b, self.epsilon
        )

    def forger(self) -> Forger:
        """:meth:`forge`, full knowledge (stateless); :func:`fang_adversary` picks the setting."""
        return self.forge


def fang_adversary(
    attack: Fang,
    malicious_partition_ids: Collection[int] = frozenset(),
    omniscient: bool = True,
) -> ColludingAdversary:
    """The colluding adversary of ``attack`` (any Flower API), full or partial knowledge.

    As :func:`~clients.omniscient.colluding_adversary`, and the forging
    formula follows ``omniscient`` too: the paper's full-knowledge attack on
    the honest updates, or its partial-knowledge one on the attackers' own
    before-attack updates. A Message-API app passes it to its strategy, e.g.
    ``Krum(f=1, adversary=fang_adversary(Fang(), {3, 4}, omniscient=False))``.

    Raises
    ------
    ValueError
        If ``omniscient`` is not a bool or a parameter is out of range.
    """
    checked = colluding_adversary(attack, malicious_partition_ids, omniscient)
    forger = functools.partial(attack.forge, full_knowledge=omniscient)
    return ColludingAdversary(forger, checked.omniscient, checked.malicious_partition_ids)


class FangClient(OmniscientAttackClient):
    """Attack client for :func:`fang` (forged on the server; see :mod:`clients.omniscient`).

    Parameters: the fields of :class:`Fang` and ``omniscient``: the paper's
    full-knowledge attack (``True``, the honest updates of the round) or its
    partial-knowledge one (``False``, the attackers' own before-attack updates).
    """

    attack_type = Fang

    @classmethod
    def build_adversary(
        cls, malicious_partition_ids: Collection[int] = frozenset(), **params: Any
    ) -> ColludingAdversary:
        """:func:`fang_adversary` with ``params`` (the knowledge setting is also the formula's).

        Raises
        ------
        ValueError
            If ``omniscient`` is not a bool or a parameter is out of range.
        TypeError
            If a parameter is unknown to the attack.
        """
        values = cls.params_type(**params)
        collusion: Collusion = build_part(Collusion, values)
        attack: Fang = build_part(Fang, values)
        return fang_adversary(attack, malicious_partition_ids, collusion.omniscient)
