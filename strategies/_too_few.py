"""The "too few clients for f" policy shared by every rule with a Byzantine bound.

A rule that tolerates ``f`` Byzantine updates needs enough updates for it
(Krum ``n > 2f + 2``, Bulyan ``n >= 4f + 3``, trimmed mean ``n > 2b``, NNM
``n > f``). A round can have fewer: clients per round set too low,
rejected replies, or Bucketing's ``ceil(n / s)`` bucket means. The rule's
``on_too_few`` says what happens then:

- ``"raise"`` (default): :class:`TooFewClientsError` naming the rule, ``f``
  and ``n``; the rule is never silently changed;
- ``"reduce_f"``: the round uses the largest ``f`` its ``n`` allows and logs
  a warning.

Either way the ``f`` actually used is in the round's metrics (``f_used``;
``nnm_f_used`` for NNM, which wraps a rule that may report its own).
"""

from __future__ import annotations

import logging
from typing import ClassVar

from flsec_flower.aggregation import RoundContext

logger = logging.getLogger("flsec")

ON_TOO_FEW = ("raise", "reduce_f")
"""Values of ``on_too_few``."""


class TooFewClientsError(ValueError):
    """A round has too few updates for a rule's ``f`` and the policy is ``"raise"``."""


def check_on_too_few(value: object) -> str:
    """Return ``value`` if it is a valid ``on_too_few``, else raise ``ValueError`` naming it."""
    if value not in ON_TOO_FEW:
        raise ValueError(f"on_too_few must be one of {', '.join(ON_TOO_FEW)}, got {value!r}")
    return str(value)


class ByzantineBound:
    """Mixin of the rules with a Byzantine bound: the per-round ``f`` under ``on_too_few``.

    A class sets :attr:`requirement`, :attr:`f_param` and :attr:`f_metric`
    and implements :meth:`max_f`; its instances hold ``on_too_few``.
    """

    requirement: ClassVar[str] = ""
    """The condition on ``n`` and ``f``, for messages (e.g. ``"n > 2f + 2"``)."""

    f_param: ClassVar[str] = "f"
    """Name of the constructor parameter that sets the bound."""

    f_metric: ClassVar[str] = "f_used"
    """Round metric holding the bound actually used."""

    on_too_few: str = "raise"

    def wanted_f(self, n: int) -> int:
        """The configured bound for a round of ``n`` updates."""
        return int(self.f)  # type: ignore[attr-defined]

    def max_f(self, n: int) -> int | None:
        """The largest bound valid for ``n`` updates, or ``None`` when even 0 is not."""
        raise NotImplementedError

    def fits(self, n: int) -> bool:
        """Whether ``n`` updates are enough for the configured bound."""
        best = self.max_f(n)
        return best is not None and best >= self.wanted_f(n)

    def round_f(self, n: int, ctx: RoundContext) -> int | None:
        """The bound this round uses: the configured one if ``n`` allows it, else per the policy.

        ``ctx.on_too_few``, when set (by Bucketing for its inner rule),
        overrides the rule's own policy.

        Returns
        -------
        int or None
            The bound to use; ``None`` (only under ``"reduce_f"``) when even
            0 is not valid for ``n`` and the rule must fall back.

        Raises
        ------
        TooFewClientsError
            Under ``"raise"``, when ``n`` is too small for the configured bound.
        """
        wanted = self.wanted_f(n)
        if self.fits(n):
            return wanted
        policy = ctx.on_too_few or self.on_too_few
        name = type(self).__name__
        detail = f"{name} needs {self.requirement} but n={n}, {self.f_param}={wanted}"
        if policy == "raise":
            raise TooFewClientsError(
                f"round {ctx.server_round}: {detail} (on_too_few='raise'; "
                "'reduce_f' lowers it for such rounds)"
            )
        best = self.max_f(n)
        logger.warning(
            "round %d: %s; on_too_few='reduce_f': using %s",
            ctx.server_round,
            detail,
            "no bound (fallback)" if best is None else f"{self.f_param}={best}",
        )
        return best
