"""When an attack acts, and which round it is, without the project's config.

An attack outside our simulations (an outside Flower app, a client mod, a
deployment) cannot rely on our fit-config key ``server_round``: Flower's
legacy ``FedAvg`` sends no config at all, Flower's Message-API strategies
send ``server-round``, the legacy server puts the round into the message's
``group_id``. :func:`round_from_config` reads the keys Flower and we use;
an attack that finds none counts its own fit calls.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from flsec_flower.wire import MESSAGE_SERVER_ROUND, SERVER_ROUND

ROUND_KEYS = (SERVER_ROUND, MESSAGE_SERVER_ROUND)
"""Config keys that carry the round: ours (legacy API) and Flower's Message-API strategies'."""


def round_from_config(config: Mapping[str, object]) -> int | None:
    """The server round named in a fit config, or ``None`` when it names none.

    Parameters
    ----------
    config : mapping
        The fit config (legacy ``Config`` dict or a Message-API ``ConfigRecord``).

    Returns
    -------
    int or None
        The value of the first of :data:`ROUND_KEYS` present.

    Raises
    ------
    ValueError
        If the key is present but not a positive integer.

    Examples
    --------
    >>> round_from_config({"server-round": 3}), round_from_config({"lr": 0.1})
    (3, None)
    """
    for key in ROUND_KEYS:
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"fit config {key!r}: got {value!r}, expected a round number")
            if not (math.isfinite(value) and value == int(value) and value >= 0):
                raise ValueError(f"fit config {key!r}: got {value!r}, expected a round number")
            return int(value)
    return None


@dataclass(frozen=True)
class Schedule:
    """The rounds in which an attack acts.

    Active from ``start_round`` to ``end_round`` (inclusive; open-ended when
    ``None``), or in ``start_round`` alone when ``single_shot``. Outside its
    rounds an attacker behaves honestly.

    Parameters
    ----------
    start_round : int
        First active round (>= 1).
    end_round : int, optional
        Last active round (>= ``start_round``).
    single_shot : bool
        Act in ``start_round`` only (Bagdasaryan et al.'s single-shot model replacement).

    Raises
    ------
    ValueError
        Naming the field, for rounds out of range.

    Examples
    --------
    >>> s = Schedule(start_round=2, end_round=3)
    >>> [s.active(r) for r in (1, 2, 3, 4)]
    [False, True, True, False]
    """

    start_round: int = 1
    end_round: int | None = None
    single_shot: bool = False

    def __post_init__(self) -> None:
        """Check the rounds."""
        if isinstance(self.start_round, bool) or not isinstance(self.start_round, int):
            raise ValueError(f"start_round: got {self.start_round!r}, must be an integer >= 1")
        if self.start_round < 1:
            raise ValueError(f"start_round: got {self.start_round!r}, must be an integer >= 1")
        if self.end_round is not None and not (
            isinstance(self.end_round, int) and self.end_round >= self.start_round
        ):
            raise ValueError(
                f"end_round: got {self.end_round!r}, must be an integer >= start_round="
                f"{self.start_round}"
            )

    def active(self, server_round: int) -> bool:
        """Whether the attack acts in ``server_round``."""
        if server_round < self.start_round:
            return False
        if self.single_shot:
            return server_round == self.start_round
        return self.end_round is None or server_round <= self.end_round


class RoundClock:
    """The round of each fit call: from the config when it says, else counted.

    Every call to :meth:`tick` is one fit. When the config names the round
    (:func:`round_from_config`) that round is used; otherwise the clock
    counts fit calls (the first is round 1). With ``require_config`` a
    config without a round is an error instead, for attackers whose schedule
    names server rounds and who may not be sampled every round (a count of
    fit calls is then the number of participations, not the round).

    Parameters
    ----------
    require_config : bool
        Refuse configs without a round key.

    Examples
    --------
    >>> clock = RoundClock()
    >>> clock.tick({}), clock.tick({"server-round": 7}), clock.tick({})
    (1, 7, 8)
    """

    def __init__(self, require_config: bool = False) -> None:
        self.require_config = require_config
        self.last = 0

    def tick(self, config: Mapping[str, object]) -> int:
        """The round of this fit call.

        Raises
        ------
        RuntimeError
            With ``require_config``, if the config names no round.
        """
        named = round_from_config(config)
        if named is None and self.require_config:
            raise RuntimeError(
                "the fit config names no round (looked for "
                f"{', '.join(map(repr, ROUND_KEYS))}); send it from the strategy "
                "(on_fit_config_fn) or let the attack count its fit calls"
            )
        self.last = self.last + 1 if named is None else named
        return self.last
