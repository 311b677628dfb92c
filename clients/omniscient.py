"""Plumbing shared by the omniscient attacks: the colluding adversary.

Threat model: the attackers collude and see the honest updates of the round
(Baruch et al., 2019; Xie et al., 2019; Shejwalkar & Houmansadr, 2021;
Karimireddy et al., 2022). In the simulation each attack client trains
honestly and tags its reply (:data:`~clients.attack.ACTIVE_TAG`); the
simulation builds the strategy with ``adversary=AttackCls.server_adversary(cfg)``
and the strategy base calls it inside ``aggregate_fit`` before the defence. It
replaces the rows of the active attackers with the output of the attack's
``forge``. This is the simulation's model of collusion, not part of any
defence: a defence never calls it and never sees the ground truth (the
attackers' partition ids) that the adversary is given at construction.

In the non-omniscient mode (``omniscient=False``) the attackers only know
their own updates: ``forge`` gets the active attackers' honestly trained rows
(before forging) instead of the honest ones.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from clients.attack import ACTIVE_TAG, AttackClient, build_part, compose_params
from flsec_flower.aggregation import Adversary, RoundContext
from flsec_flower.config import ExperimentConfig
from flsec_flower.experiment import ClientEnv, malicious_ids

Forger = Callable[[torch.Tensor, list[int], int, int, torch.Generator], torch.Tensor]
"""``forger(reference, reference_ids, num_byzantine, num_total, generator) -> forged``.

``reference`` holds the rows the attackers know, shape ``(k, d)``, and
``reference_ids`` their partition ids; ``num_byzantine`` is the number of
active attackers and ``num_total`` the number of rows of the round. The result
is one row ``(d,)`` sent by every attacker, or one row per attacker
``(num_byzantine, d)``. A forger may keep state across rounds.
"""

_FLOAT32_MAX = torch.finfo(torch.float32).max


def coordinate_std(rows: torch.Tensor) -> torch.Tensor:
    r"""Coordinate-wise unbiased standard deviation, without float32 overflow.

    .. math:: \sigma_j = \sqrt{\tfrac{1}{k - 1} \sum_i (g_{ij} - \mu_j)^2}

    (0 for a single row). The rows are divided by their largest absolute
    entry first, so entries near ``1e30`` do not overflow when squared.

    Parameters
    ----------
    rows : torch.Tensor
        Shape ``(k, d)``.

    Returns
    -------
    torch.Tensor
        Shape ``(d,)``.

    Examples
    --------
    >>> coordinate_std(torch.tensor([[0.0, 1e30], [2.0, 3e30]]))
    tensor([1.4142e+00, 1.4142e+30])
    """
    if rows.shape[0] < 2:
        return torch.zeros_like(rows[0])
    scale = rows.abs().amax(dim=0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    return (rows / scale).std(dim=0) * scale


def attacker_rows(ctx: RoundContext, malicious: Collection[int]) -> tuple[list[int], list[int]]:
    """Split the rows of a round into active attackers and honest clients.

    Parameters
    ----------
    ctx : RoundContext
        The round.
    malicious : collection of int
        The attackers' partition ids (the colluders know each other).

    Returns
    -------
    active : list of int
        Rows whose partition id is an attacker's and whose fit metrics carry
        :data:`~clients.attack.ACTIVE_TAG` set to true.
    honest : list of int
        Rows whose partition id is not an attacker's.

    Examples
    --------
    >>> ctx = RoundContext(1, [0, 1, 2], torch.ones(3), torch.zeros(1), torch.Generator(),
    ...                    [{}, {ACTIVE_TAG: True}, {ACTIVE_TAG: False}])
    >>> attacker_rows(ctx, {1, 2})
    ([1], [0])
    """
    metrics = ctx.client_metrics or [{} for _ in ctx.partition_ids]
    active = [
        i
        for i, (pid, m) in enumerate(zip(ctx.partition_ids, metrics, strict=True))
        if pid in malicious and bool(m.get(ACTIVE_TAG, False))
    ]
    honest = [i for i, pid in enumerate(ctx.partition_ids) if pid not in malicious]
    return active, honest


class ColludingAdversary:
    """The :data:`~flsec_flower.aggregation.Adversary` of an omniscient attack.

    Called as ``adversary(U, ctx) -> U'``: the rows of the active attackers
    (see :func:`attacker_rows`) are replaced by ``forger(reference, ...)``;
    every other row is returned bit-identical. The reference rows are the
    honest ones when ``omniscient`` (the attackers' own rows when the round
    has no honest row), the active attackers' own rows otherwise. Forged
    values that are not finite are replaced (NaN by 0, infinities by the
    largest float32), so the defence always receives a finite matrix.

    This models colluding attackers in simulation; it is no part of a defence.

    Parameters
    ----------
    forger : Forger
        The attack's forging step (may keep state across rounds).
    omniscient : bool
        Whether the attackers see the honest updates.
    malicious_partition_ids : collection of int
        The colluding attackers' partition ids (the simulation's ground
        truth; only tagged rows of these partitions are forged).
    """

    def __init__(
        self,
        forger: Forger,
        omniscient: bool = True,
        malicious_partition_ids: Collection[int] = frozenset(),
    ) -> None:
        self.forger = forger
        self.omniscient = omniscient
        self.malicious_partition_ids = frozenset(malicious_partition_ids)

    def __call__(self, updates: torch.Tensor, ctx: RoundContext) -> torch.Tensor:
        """Return ``updates`` with the active attackers' rows forged."""
        active, honest = attacker_rows(ctx, self.malicious_partition_ids)
        if not active:
            return updates
        reference_rows = honest if self.omniscient and honest else active
        forged = self.forger(
            updates[reference_rows],
            [ctx.partition_ids[i] for i in reference_rows],
            len(active),
            updates.shape[0],
            ctx.generator,
        )
        forged = torch.nan_to_num(
            forged.to(device=updates.device, dtype=updates.dtype),
            nan=0.0,
            posinf=_FLOAT32_MAX,
            neginf=-_FLOAT32_MAX,
        )
        out = updates.clone()
        out[torch.as_tensor(active, device=updates.device)] = forged
        return out


class OmniscientAttack(Protocol):
    """What every omniscient attack's parameter dataclass provides."""

    def forger(self) -> Forger:
        """The forging step with these parameters (a fresh state for a stateful attack)."""
        ...


@dataclass(frozen=True)
class Collusion:
    """What the colluding attackers see, a parameter of every omniscient attack.

    Parameters
    ----------
    omniscient : bool
        ``True``: the attackers see the honest updates of the round.
        ``False``: they estimate the honest statistics from their own
        honestly trained updates only.
    """

    omniscient: bool = True

    def __post_init__(self) -> None:
        """Check ``omniscient``."""
        if not isinstance(self.omniscient, bool):
            raise ValueError(f"omniscient must be true or false, got {self.omniscient!r}")


def colluding_adversary(
    attack: OmniscientAttack,
    malicious_partition_ids: Collection[int],
    omniscient: bool = True,
) -> ColludingAdversary:
    """The server-side adversary of ``attack`` for the colluders given (any Flower API).

    The simulation builds it from the config (:meth:`OmniscientAttackClient.server_adversary`);
    a Message-API app whose attackers carry :func:`clients.mods.tag_mod`
    passes it to its strategy, e.g.
    ``Krum(f=1, adversary=colluding_adversary(Ipm(epsilon=0.1), {3, 4}))``.
    The parameters are checked at once by forging on a tiny zero matrix
    with a separate forger (the checks live in the attack's pure function),
    so a bad value fails when the run is built.

    Raises
    ------
    ValueError
        If ``omniscient`` is not a bool or a parameter is out of range.
    """
    Collusion(omniscient)
    attack.forger()(torch.zeros(2, 1), [0, 1], 1, 3, torch.Generator().manual_seed(0))
    return ColludingAdversary(attack.forger(), omniscient, malicious_partition_ids)


class OmniscientAttackClient(AttackClient):
    """Base of the omniscient attacks: trains honestly, forged on the server.

    The client itself only tags its reply (:class:`~clients.attack.AttackClient`);
    :meth:`server_adversary` gives the simulation the :class:`ColludingAdversary`
    that forges the tagged rows. A subclass names its attack's parameter
    dataclass (an :class:`OmniscientAttack`, with one ``forge``) in
    ``attack_type``; the parameters (its fields and :class:`Collusion`'s
    ``omniscient``) are declared there once: the registry, the config
    validation, the client and the server adversary read them through
    ``params_type``, composed when the subclass is defined.

    Parameters
    ----------
    env : ClientEnv
        The client's id, data, config and device.
    model : torch.nn.Module, optional
        A model to reuse; built from the config when omitted.
    **params
        The fields of ``attack_type`` and ``omniscient``.
    """

    attack_type: ClassVar[type]
    """The attack's parameter dataclass (an :class:`OmniscientAttack`)."""

    params_type: ClassVar[type]
    """``attack_type``'s fields and :class:`Collusion`'s, composed per subclass."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Compose the subclass's ``params_type``: the attack's fields, then ``omniscient``."""
        super().__init_subclass__(**kwargs)
        cls.params_type = compose_params(f"{cls.__name__}Params", (cls.attack_type, Collusion))

    def __init__(self, env: ClientEnv, model: nn.Module | None = None, **params: Any) -> None:
        super().__init__(env, model)
        self.adversary = type(self).build_adversary(**params)

    @classmethod
    def build_adversary(
        cls, malicious_partition_ids: Collection[int] = frozenset(), **params: Any
    ) -> ColludingAdversary:
        """Return the adversary of this attack with ``params`` (:func:`colluding_adversary`).

        Raises
        ------
        ValueError
            If ``omniscient`` is not a bool or a parameter is out of range.
        TypeError
            If a parameter is unknown to the attack.
        """
        values = cls.params_type(**params)
        collusion: Collusion = build_part(Collusion, values)
        attack: OmniscientAttack = build_part(cls.attack_type, values)
        return colluding_adversary(attack, malicious_partition_ids, collusion.omniscient)

    @classmethod
    def server_adversary(cls, cfg: ExperimentConfig) -> Adversary | None:
        """The adversary for the strategy, from ``cfg.attack.params`` over the defaults.

        Its colluders are the run's attackers (:func:`~flsec_flower.experiment.malicious_ids`).
        """
        if cfg.attack is None:
            return None
        return cls.build_adversary(
            malicious_partition_ids=malicious_ids(cfg), **cls.attack_params(cfg)
        )
