"""The mimic attacks (Karimireddy, He & Jaggi, ICLR 2022), omniscient attacks.

Every attacker copies one honest worker, so the defence over-weights that
worker's data in a heterogeneous (non-IID) federation without ever seeing
an outlier. Karimireddy, He & Jaggi, "Byzantine-Robust Learning on
Heterogeneous Datasets via Bucketing", ICLR 2022.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from clients.normalized_mean import unit_rows
from clients.omniscient import Forger, OmniscientAttackClient


def _unit(vector: torch.Tensor) -> torch.Tensor:
    return unit_rows(vector[None, :])[0]


def power_step(reference: torch.Tensor, mean: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    r"""One power-iteration step towards the top principal direction of the rows.

    .. math:: z' = \frac{\sum_i \langle g_i - \mu, z \rangle (g_i - \mu)}
                        {\lVert \sum_i \langle g_i - \mu, z \rangle (g_i - \mu) \rVert_2}

    (zero when the numerator is zero).

    Parameters
    ----------
    reference : torch.Tensor
        Rows ``g_i``, shape ``(k, d)``.
    mean : torch.Tensor
        Centre ``mu``, shape ``(d,)``.
    z : torch.Tensor
        Current direction, shape ``(d,)``.

    Returns
    -------
    torch.Tensor
        The new unit direction, shape ``(d,)``.

    Examples
    --------
    >>> g = torch.tensor([[1.0, 0.1], [-1.0, -0.1], [0.0, 0.0]])
    >>> power_step(g, torch.zeros(2), torch.tensor([0.0, 1.0]))
    tensor([0.9950, 0.0995])
    """
    centred = reference - mean
    return _unit((centred @ z) @ centred)


def mimic_target(reference: torch.Tensor, direction: torch.Tensor) -> int:
    r"""The row with the largest projection on ``direction``.

    .. math:: i^\star = \arg\max_i \langle g_i, z \rangle

    Parameters
    ----------
    reference : torch.Tensor
        Rows ``g_i``, shape ``(k, d)``.
    direction : torch.Tensor
        ``z``, shape ``(d,)``.

    Returns
    -------
    int
        ``i*`` (the first one on ties).

    Examples
    --------
    >>> mimic_target(torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([0.0, 1.0]))
    1
    """
    return int(torch.argmax(reference @ direction))


class MimicForger:
    r"""The mimic attack's forging step, with its state across rounds.

    Following the authors' ``MimicVariantAttacker``: in the first round the
    centre is the honest mean and the direction one power step from a random
    Gaussian vector (drawn from the round's generator); during the next
    ``warmup - 1`` rounds both are running averages,

    .. math::

        \mu \leftarrow \tfrac{t}{t+1}\mu + \tfrac{1}{t+1}\bar g, \qquad
        z \leftarrow \mathrm{unit}\big(\tfrac{t}{t+1} z
                      + \tfrac{1}{t+1}\,\mathrm{power\_step}(g, \mu, z)\big),

    and the attackers copy the worker of largest projection
    (:func:`mimic_target`). After the warm-up ``z`` is fixed and so is the
    copied worker (by partition id); in a round where that worker was not
    sampled, the largest projection on the fixed ``z`` is copied instead.

    Parameters
    ----------
    warmup : int
        Rounds (with active attackers) that estimate ``z``; 1 in the
        authors' code.

    Raises
    ------
    ValueError
        If ``warmup`` is not an integer >= 1.

    Examples
    --------
    >>> forger = MimicForger(warmup=1)
    >>> g = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.1]])
    >>> row = forger(g, [4, 7, 9], 2, 5, torch.Generator().manual_seed(0))
    >>> any(torch.equal(row, r) for r in g), forger.target in (4, 7)
    (True, True)
    """

    def __init__(self, warmup: int = 1) -> None:
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"warmup must be an integer >= 1, got {warmup!r}")
        self.warmup = warmup
        self.rounds = 0
        self.mean: torch.Tensor | None = None
        self.direction: torch.Tensor | None = None
        self.target: int | None = None

    def __call__(
        self,
        reference: torch.Tensor,
        reference_ids: list[int],
        num_byzantine: int,
        num_total: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Update the estimate during the warm-up and return the copied row."""
        t = self.rounds
        average = reference.mean(dim=0)
        if self.mean is None or self.direction is None:
            start = torch.randn(reference.shape[1], generator=generator)
            self.mean = average
            self.direction = power_step(reference, average, start.to(reference))
        elif t < self.warmup:
            self.mean = (t * self.mean + average) / (t + 1)
            step = power_step(reference, self.mean, self.direction)
            self.direction = _unit((t * self.direction + step) / (t + 1))
        self.rounds += 1
        if t < self.warmup or self.target not in reference_ids:
            row = mimic_target(reference, self.direction)
            if t < self.warmup:
                self.target = reference_ids[row]
        else:
            row = reference_ids.index(self.target)
        return reference[row]


@dataclass(frozen=True)
class Mimic:
    """The mimic attack's parameters; its forger keeps state (:class:`MimicForger`).

    Parameters
    ----------
    warmup : int
        Rounds that estimate the direction before the copied worker is fixed.
    """

    warmup: int = 1

    def forger(self) -> Forger:
        """A fresh :class:`MimicForger` (its state lives in the adversary)."""
        return MimicForger(self.warmup)


class MimicClient(OmniscientAttackClient):
    """Attack client for :class:`MimicForger` (forged on the server; see :mod:`clients.omniscient`).

    Parameters: the fields of :class:`Mimic` (``warmup``) and ``omniscient``
    (copy an honest worker, or one of the attackers' own honestly trained
    updates).
    """

    attack_type = Mimic


def mimic_fixed(reference: torch.Tensor, target: int = 0) -> torch.Tensor:
    r"""Copy the reference row at position ``target`` (modulo the number of rows).

    .. math:: v = g_{\,\mathrm{target} \bmod k}

    The simple variant of the authors' code (``MimicAttacker``, rank 0): the
    attackers copy a fixed worker; rows are sorted by partition id, so
    ``target = 0`` is the honest worker of smallest partition id in the round.

    Parameters
    ----------
    reference : torch.Tensor
        Updates the attackers know, shape ``(k, d)``.
    target : int
        Position ``>= 0`` of the copied row.

    Returns
    -------
    torch.Tensor
        The copied row, shape ``(d,)``.

    Raises
    ------
    ValueError
        If ``target`` is negative.

    Examples
    --------
    >>> mimic_fixed(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), target=3)
    tensor([3., 4.])
    """
    if isinstance(target, bool) or not isinstance(target, int) or target < 0:
        raise ValueError(f"target must be an integer >= 0, got {target!r}")
    return reference[target % reference.shape[0]]


@dataclass(frozen=True)
class Mimic2:
    """:func:`mimic_fixed` as an omniscient attack (see :mod:`clients.omniscient`).

    Parameters
    ----------
    target : int
        Position of the copied row among the reference rows.
    """

    target: int = 0

    def forge(
        self,
        reference: torch.Tensor,
        reference_ids: list[int],
        num_byzantine: int,
        num_total: int,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """Return :func:`mimic_fixed` of the reference rows."""
        return mimic_fixed(reference, self.target)

    def forger(self) -> Forger:
        """:meth:`forge` (stateless)."""
        return self.forge


class Mimic2Client(OmniscientAttackClient):
    """Attack client for :func:`mimic_fixed` (forged on the server; see :mod:`clients.omniscient`).

    Parameters: the fields of :class:`Mimic2` (``target``) and ``omniscient``
    (copy an honest worker, or one of the attackers' own).
    """

    attack_type = Mimic2
