"""Registry names to Message-API strategies: ``message_strategy("krum", {"f": 1})``.

Every name of :data:`~flsec_flower.app.registry.RULES` and
:data:`~flsec_flower.app.registry.WRAPPERS` is built by the same registry
code as for the legacy API and put behind
:class:`strategies.message.MessageStrategy`, so a rule registered once is
in both APIs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from flsec_flower.app import registry
from flsec_flower.config import StrategyConfig, WrapperConfig
from strategies import RobustStrategy
from strategies.message import MessageStrategy


def build_rule(
    name: str,
    params: Mapping[str, Any] | None = None,
    wrappers: Sequence[tuple[str, Mapping[str, Any]]] = (),
    **common: Any,
) -> RobustStrategy:
    """The rule ``name`` with ``params``, wrapped by ``wrappers`` (innermost first).

    ``common`` goes to every constructor (``device``, ``seed``, ``server_lr``
    ...). Unknown names and parameters raise
    :class:`~flsec_flower.config.ConfigError` naming them.
    """
    cfg = StrategyConfig(
        name=name,
        params=dict(params or {}),
        wrappers=[WrapperConfig(name=w, params=dict(p)) for w, p in wrappers],
    )
    return registry.build_strategy(cfg, **common)


def message_strategy(
    rule: str | RobustStrategy,
    params: Mapping[str, Any] | None = None,
    wrappers: Sequence[tuple[str, Mapping[str, Any]]] = (),
    *,
    rule_kwargs: Mapping[str, Any] | None = None,
    **strategy_kwargs: Any,
) -> MessageStrategy:
    """A Message-API strategy for a registry name (or a built rule).

    Parameters
    ----------
    rule : str or RobustStrategy
        A name of ``RULES`` (then ``params`` and ``wrappers`` apply) or a rule object.
    params : mapping, optional
        The rule's parameters, e.g. ``{"f": 1}``.
    wrappers : sequence of (name, params)
        Transforms around the rule, innermost first, e.g. ``[("bucketing", {"s": 2})]``.
    rule_kwargs : mapping, optional
        Arguments every rule and wrapper constructor takes (``device``,
        ``seed``, ``server_lr``, ``min_results`` ...).
    **strategy_kwargs
        Passed to :class:`~strategies.message.MessageStrategy`
        (``min_train_nodes``, ``registration_timeout`` ...).

    Examples
    --------
    >>> s = message_strategy("krum", {"f": 1}, [("bucketing", {"s": 2})],
    ...                      rule_kwargs={"device": "cpu"}, min_train_nodes=8)
    >>> type(s.rule).__name__, type(s.rule.inner).__name__, s.rule.inner.f
    ('Bucketing', 'Krum', 1)
    """
    if isinstance(rule, str):
        rule = build_rule(rule, params, wrappers, **dict(rule_kwargs or {}))
    elif params or wrappers or rule_kwargs:
        raise ValueError("params, wrappers and rule_kwargs apply to a rule given by name")
    return MessageStrategy(rule, **strategy_kwargs)
