"""The robust strategy base: Flower plumbing done once for every rule.

The round's work is API-independent: :meth:`RobustStrategy.aggregate_replies`
takes :class:`Reply` objects (whichever Flower API they came through) and
returns the new global model and the round's metrics. Two thin adapters feed
it: :meth:`RobustStrategy.aggregate_fit` (the legacy ``Strategy`` API,
``FitRes``) and :class:`strategies.message.MessageStrategy` (the Message API,
``Message`` with an ``ArrayRecord`` and a ``MetricRecord``). Each round, the core

1. turns every reply into one row of the update matrix
   ``U[i] = x_i - x_global`` (float32, on the aggregation device);
2. rejects replies that cannot be aggregated (see :func:`check_reply`): a
   ``partition_id`` metric that is missing, not an integer, NaN, infinite,
   negative or claimed by another reply of the round; parameters that do
   not decode, are empty, have the wrong number of arrays, a wrong shape or
   dtype, or a non-finite value; a ``num_examples`` that is not a positive
   finite number up to :data:`MAX_NUM_EXAMPLES`. Each rejection is logged
   with the client and the reason and recorded in the round's diagnostics;
   a rejected reply never reaches a rule and the round goes on with the rest;
3. lets the simulation's adversary (omniscient attacks) rewrite the rows of
   the colluding attackers;
4. calls :meth:`RobustStrategy.aggregate_updates` (the rule, possibly wrapped
   by pre/post transforms) on ``U``;
5. moves the global model: ``x_global <- x_global + server_lr * aggregate``,
   unless the aggregate is non-finite, in which case the round is skipped.
   With server momentum ``beta > 0`` (FedAvgM, Hsu et al. 2019) the step is
   ``m <- beta * m + aggregate; x_global <- x_global + server_lr * m``;
6. adds the rule's own numbers (``Aggregate.metrics``, e.g. ``f_used``) to
   the round's metrics and diagnostics.

Clients send weights ``x_i`` (``training.send: weights``) or gradients
``g_i`` (``training.send: gradient``, see :class:`clients.HonestClient`).
For gradients the strategy's :attr:`RobustStrategy.gradient_lr` gives the
honest learning rate ``lr_r`` of the round and the row is
``U[i] = -lr_r * g_i``: the same one-SGD-step update as in weights mode, so
rules and their thresholds read the same in both modes, and with
``server_lr = 1`` the model moves by ``x <- x - lr_r * aggregate(g)``
(distributed SGD, He et al. Algorithm 1; DiverseFL eq. 4).

Robust rules never trust the client-reported ``num_examples``; the
:class:`RoundContext` carries them for rules where weighting is an explicit
opt-in (``weighted=True``).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import numbers
from abc import abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.common import (
    FitIns,
    FitRes,
    GetPropertiesIns,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg

from flsec_flower.aggregation import (
    Adversary,
    Aggregate,
    LocalTrainer,
    RoundContext,
)
from flsec_flower.params import ParamLayout, resolve_device
from flsec_flower.seeds import numpy_rng, round_generator
from flsec_flower.wire import ATTACK_ACTIVE, PARTITION_ID, QUERY
from strategies._too_few import TooFewClientsError as RuleTooFewError

logger = logging.getLogger("flsec")

RoundListener = Callable[[int, dict[str, Any]], None]
"""``listener(server_round, record)``: receives evaluation metrics and diagnostics."""

PARTITION_ID_QUERY = PARTITION_ID
"""``get_properties`` query (and reply key) of a client's partition."""

MAX_NUM_EXAMPLES = 10**9
"""Largest credible ``num_examples`` of one reply (a billion examples on one client).

A larger count is rejected: no dataset in reach of a simulation has it, and
an attacker inflates the count to dominate rules that weight by it.
"""


class TooFewClientsError(RuntimeError):
    """Fewer clients replied in a round than ``min_results`` requires."""


class RegistrationTimeoutError(RuntimeError):
    """Too few clients connected within ``registration_timeout`` for a round to start."""


@dataclass
class Rejection:
    """A client result that was not aggregated, and why.

    ``partition_id`` is ``None`` when the reply carried no usable id;
    ``client`` names the reply in messages (its partition id, else its
    Flower node id or position).
    """

    partition_id: int | None
    reason: str
    client: str = ""


def read_partition_id(
    metrics: object, key: str = PARTITION_ID_QUERY
) -> tuple[int | None, str | None]:
    """The reply's ``partition_id`` metric (or ``key``) as an ``int``, or ``None`` and why not.

    Integers and integral floats (``3.0``) are accepted; a missing metric, a
    string, a bool, NaN, an infinity, a fraction or a negative number are not.

    Examples
    --------
    >>> read_partition_id({"partition_id": 3.0})
    (3, None)
    >>> read_partition_id({"partition_id": "abc"})
    (None, "partition_id 'abc' is not an integer")
    """
    if not isinstance(metrics, Mapping) or key not in metrics:
        return None, f"no {key} metric"
    value = metrics[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None, f"{key} {value!r} is not an integer"
    value = float(value)
    if not math.isfinite(value):
        return None, f"{key} {value!r} is not finite"
    if value != int(value):
        return None, f"{key} {value!r} is not an integer"
    if value < 0:
        return None, f"{key} {value!r} is negative"
    return int(value), None


def check_num_examples(value: object, key: str = "num_examples") -> str | None:
    """Why ``num_examples`` is not a credible sample count, or ``None`` when it is.

    A credible count is a finite number in ``(0, MAX_NUM_EXAMPLES]``; ``key``
    names the count in the message (the Message API's is ``num-examples``).

    Examples
    --------
    >>> check_num_examples(10) is None
    True
    >>> check_num_examples(0)
    'num_examples=0 is not a positive count'
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{key}={value!r} is not a number"
    if not math.isfinite(float(value)) or float(value) <= 0:
        return f"{key}={value!r} is not a positive count"
    if float(value) > MAX_NUM_EXAMPLES:
        return f"{key}={value!r} exceeds the bound {MAX_NUM_EXAMPLES}"
    return None


def decode_update(parameters: Parameters, layout: ParamLayout) -> tuple[np.ndarray | None, str]:
    """The legacy reply's model as one flat float32 vector, or ``None`` and why not.

    See :func:`decode_arrays`; the bytes are NumPy ``.npy`` files, no pickles.
    """
    return decode_arrays(lambda: parameters_to_ndarrays(parameters), layout)


def decode_arrays(
    load: Callable[[], list[np.ndarray]], layout: ParamLayout
) -> tuple[np.ndarray | None, str]:
    """The reply's model as one flat float32 vector, or ``None`` and why it cannot be used.

    ``load()`` decodes the untrusted arrays (any exception it raises rejects
    the reply). The arrays must be as many as the global model's, with its
    shapes and dtypes, and hold only finite values.

    Examples
    --------
    >>> layout = ParamLayout.of([np.zeros(2, np.float32)])
    >>> decode_arrays(lambda: [np.ones(2, np.float32)], layout)[0]
    array([1., 1.], dtype=float32)
    >>> decode_arrays(lambda: [np.full(2, np.nan, np.float32)], layout)
    (None, 'update has non-finite values')
    """
    try:
        arrays = load()
    except Exception as err:  # any decoding failure of untrusted bytes is the client's fault
        return None, f"the update's arrays do not decode: {type(err).__name__}: {err}"
    if not arrays:
        return None, "empty update (no arrays)"
    reason = layout.mismatch(arrays)
    if reason is not None:
        return None, reason
    for i, (a, dtype) in enumerate(zip(arrays, layout.dtypes, strict=True)):
        if a.dtype != dtype:
            return None, f"array {i} has dtype {a.dtype}, expected {dtype}"
    flat = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])
    if not np.isfinite(flat).all():
        return None, "update has non-finite values"
    return flat, ""


def _active(res: FitRes) -> bool:
    """Whether the reply is tagged as an active attacker's (``attack_active`` is true)."""
    return isinstance(res.metrics, Mapping) and res.metrics.get(ATTACK_ACTIVE) is True


@dataclass
class Reply:
    """One client's training reply, whichever Flower API it came through.

    The adapters (legacy ``FitRes``, Message-API ``Message``) fill it in;
    :meth:`RobustStrategy.aggregate_replies` validates and aggregates it.

    Parameters
    ----------
    name : str
        How messages name the reply (``"partition 3"``, ``"node 42"``, ...).
    partition_id : int or None
        The client's id: the row's identity for rules with per-client state.
    id_problem : str or None
        Why the reply has no usable id (it is then rejected).
    num_examples : object
        The reported sample count, unchecked.
    load : callable
        ``load() -> list of arrays``: decodes the untrusted model; may raise.
    metrics : dict
        The reply's metrics, handed to rules and the adversary.
    active : bool
        Tagged as an active attacker's reply (the simulation's adversary).
    problem : str or None
        A reason found by the adapter to reject the reply (e.g. a Message
        with two ArrayRecords).
    count_key : str
        The name of the sample count in the API being used, for messages.
    """

    name: str
    partition_id: int | None
    id_problem: str | None
    num_examples: object
    load: Callable[[], list[np.ndarray]]
    metrics: dict[str, Any] = field(default_factory=dict[str, Any])
    active: bool = False
    problem: str | None = None
    count_key: str = "num_examples"


@dataclass
class RoundDiagnostics:
    """What the strategy saw and decided in one round, by partition id."""

    partition_ids: list[int] = field(default_factory=list)
    selected: list[int] | None = None
    flagged: list[int] | None = None
    rejected: list[Rejection] = field(default_factory=list)
    skipped: str | None = None
    attack_participants: list[int] = field(default_factory=list)
    rule_metrics: dict[str, Scalar] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        """Return a JSON-serialisable dictionary."""
        return {
            "participants": self.partition_ids,
            "attack_participants": self.attack_participants,
            "num_failures": len(self.failures),
            "failures": self.failures,
            "selected": self.selected,
            "flagged": self.flagged,
            "num_rejected": len(self.rejected),
            "rejected": [
                {"partition_id": r.partition_id, "client": r.client, "reason": r.reason}
                for r in self.rejected
            ],
            "skipped": self.skipped,
            **self.rule_metrics,
        }


def reply_name(k: int, proxy: ClientProxy | None, pid: int | None) -> str:
    """Name a reply in messages: its partition id, else its Flower node id, else its position."""
    if pid is not None:
        return f"partition {pid}"
    cid = getattr(proxy, "cid", None)
    return f"client {cid} (reply {k})" if cid is not None else f"reply {k}"


class RobustStrategy(FedAvg):
    """Base of every flsec rule: a Flower ``FedAvg`` whose aggregation is a rule on ``U``.

    Parameters
    ----------
    server_lr : float
        Server learning rate ``eta``: ``x <- x + eta * aggregate(U)``.
    device : str
        Aggregation device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda[:k]"``.
    weighted : bool
        Let rules that support it weight clients by their reported sample
        counts. Off by default: an attacker inflates them.
    seed : int
        Seeds client sampling and every random choice of the rule, per round.
    server_momentum : float
        Server momentum ``beta`` in [0, 1); 0 is plain ``x <- x + eta * agg``.
    min_results : int
        Fewest valid replies a round aggregates (default 1). Failed and
        rejected replies are otherwise tolerated as far as the rule's own
        bound allows: a rule with ``f`` raises
        :class:`~strategies._too_few.TooFewClientsError` (or lowers ``f``,
        per its ``on_too_few``) when too few remain.
    registration_timeout : float, optional
        Seconds :meth:`configure_fit` waits for ``min_available_clients``
        (and ``min_fit_clients``) to connect before the round fails;
        ``None`` (default) waits as long as Flower's ``FedAvg`` does.
    registration_hint : str
        Appended to the message of that failure (the ``flsec`` runner says
        which config key sets the number of clients).
    local_trainer : LocalTrainer, optional
        The clients' honest local procedure run on the server (DiverseFL's
        guides, FLTrust's server update, Fang et al.'s validation); rules
        read it as ``ctx.local_trainer``.
    adversary : Adversary, optional
        The simulation's model of colluding omniscient attackers: it
        rewrites the tagged attackers' rows before the rule runs. No part of
        a defence; a deployment leaves it ``None``.
    gradient_lr : callable, optional
        ``gradient_lr(server_round) -> lr_r`` when clients send gradients
        (``training.send: gradient``): rows become ``-lr_r * g_i``.
    **kwargs
        Passed to Flower's ``FedAvg``: ``fraction_fit``, ``min_fit_clients``
        and ``min_available_clients`` (Flower's defaults, 2, unless given),
        ``evaluate_fn``, ``on_fit_config_fn``, ``initial_parameters`` (when
        absent, the global model is the one Flower's ``Server`` fetches from
        a client and passes to :meth:`configure_fit`) ...
    """

    supports_weighting: ClassVar[bool] = False
    """Whether the rule can weight clients by reported sample counts (``weighted=True``)."""

    message_api: ClassVar[bool] = True
    """Whether the rule works in the Message-API face (:class:`strategies.MessageStrategy`)."""

    state_attributes: ClassVar[tuple[str, ...]] = ("server_momentum_buffer",)
    """Instance attributes kept across rounds that a resumed run must restore.

    Tensors, numbers, lists, sets and dicts of those; collected by
    :meth:`state_dict` (with the global model) and restored by
    :meth:`load_state_dict`. A rule whose random choices derive from
    ``(seed, round)`` needs nothing here.
    """

    def __init__(
        self,
        *,
        server_lr: float = 1.0,
        device: str = "auto",
        weighted: bool = False,
        seed: int = 0,
        server_momentum: float = 0.0,
        min_results: int = 1,
        registration_timeout: float | None = None,
        registration_hint: str = "",
        local_trainer: LocalTrainer | None = None,
        adversary: Adversary | None = None,
        gradient_lr: Callable[[int], float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(min_results, bool) or not isinstance(min_results, int) or min_results < 1:
            raise ValueError(f"min_results must be a positive integer, got {min_results!r}")
        if registration_timeout is not None and not registration_timeout > 0:
            raise ValueError(
                f"registration_timeout must be positive or None, got {registration_timeout!r}"
            )
        if not 0 <= server_momentum < 1:
            raise ValueError(f"server_momentum must be in [0, 1), got {server_momentum!r}")
        if weighted and not self.supports_weighting:
            raise ValueError(
                f"weighted=True: {type(self).__name__} does not weight clients by sample counts"
            )
        if not np.isfinite(server_lr):
            raise ValueError(f"server_lr must be finite, got {server_lr!r}")
        self.server_lr = float(server_lr)
        self.server_momentum = float(server_momentum)
        self.server_momentum_buffer: torch.Tensor | None = None
        self.gradient_lr = gradient_lr
        self.device = resolve_device(device)
        self.weighted = weighted
        self.seed = seed
        self.layout: ParamLayout | None = None
        self.global_params: torch.Tensor | None = None
        self.adversary = adversary
        self.local_trainer = local_trainer
        self.round_listener: RoundListener | None = None
        self.min_results = min_results
        self.diagnostics: dict[int, RoundDiagnostics] = {}
        self._proxy_partition: dict[str, int] = {}
        self.registration_timeout = registration_timeout
        self.registration_hint = registration_hint
        self.properties_config: dict[str, Scalar] = {}
        self.participation: dict[int, list[int]] = {}

    # ------------------------------------------------------------------ rule
    @abstractmethod
    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Aggregate the update matrix ``updates`` (shape ``(n, d)``) into one update."""

    # ---------------------------------------------------------------- resume
    @classmethod
    def state_names(cls) -> tuple[str, ...]:
        """Every class's :attr:`state_attributes` along the class hierarchy, base first.

        A subclass lists only its own attributes; the base's (server momentum)
        are kept.
        """
        names: dict[str, None] = {}
        for klass in reversed(cls.__mro__):
            names.update(dict.fromkeys(vars(klass).get("state_attributes", ())))
        return tuple(names)

    def state_dict(self) -> dict[str, Any]:
        """The strategy's state across rounds: the global model and :meth:`state_names`.

        Values are deep copies, so later rounds do not change a saved state.
        """
        return {
            "global_params": copy.deepcopy(self.global_params),
            "attributes": {n: copy.deepcopy(getattr(self, n)) for n in self.state_names()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (tensors go to the aggregation device).

        Call after :meth:`initialize_parameters`, which sets the layout.

        Raises
        ------
        ValueError
            If the saved global model does not fit this model's layout, or an
            attribute is missing.
        """
        params = state["global_params"]
        if params is not None:
            if self.layout is not None and params.numel() != self.layout.dim:
                raise ValueError(
                    f"the saved global model has {params.numel()} values, "
                    f"this model {self.layout.dim}"
                )
            self.global_params = params.to(self.device)
        attributes = state["attributes"]
        missing = [name for name in self.state_names() if name not in attributes]
        if missing:
            raise ValueError(f"{type(self).__name__}: saved state lacks {missing}")
        for name in self.state_names():
            setattr(self, name, tensors_to(attributes[name], self.device))

    # ------------------------------------------------------------ Flower API
    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """Return the initial parameters and remember them as the global model."""
        params = super().initialize_parameters(client_manager)
        if params is not None:
            self.set_global(parameters_to_ndarrays(params))
        return params

    def set_global(self, arrays: list[np.ndarray]) -> None:
        """Set the global model (layout and flat vector) from Flower arrays."""
        self.layout = ParamLayout.of(arrays)
        self.global_params = self.layout.flatten(arrays, self.device)

    def adopt_global(self, parameters: Parameters) -> None:
        """Take ``parameters`` as the global model if there is none yet.

        Without ``initial_parameters`` Flower's ``Server`` fetches the initial
        weights from one client and passes them to :meth:`configure_fit`, as
        for Flower's own strategies.
        """
        if self.global_params is None:
            self.set_global(parameters_to_ndarrays(parameters))

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample clients reproducibly: a seeded draw over partition ids.

        All clients are taken when the sample size covers them; otherwise each
        client's partition id is asked once (``get_properties``) so the draw
        depends on the seed and the round only, not on node ids. Partition
        ids listed in ``self.participation[server_round]`` (a schedule the
        assembly layer builds, e.g. Bagdasaryan et al.'s attacker selected in
        round T) are always sampled: they replace the last drawn others.
        """
        self.adopt_global(parameters)
        config = self.on_fit_config_fn(server_round) if self.on_fit_config_fn else {}
        fit_ins = FitIns(parameters, config)
        sample_size, min_num = self.num_fit_clients(client_manager.num_available())
        if not client_manager.wait_for(min_num, timeout=self.registration_timeout):  # type: ignore[arg-type]  # Flower's hint says int; it passes the value to threading's wait
            raise RegistrationTimeoutError(
                f"round {server_round}: only {client_manager.num_available()} of {min_num} "
                f"clients connected within registration_timeout={self.registration_timeout} s "
                f"(min_available_clients={self.min_available_clients}, "
                f"min_fit_clients={self.min_fit_clients}){self.registration_hint}"
            )
        proxies = list(client_manager.all().values())
        if sample_size >= len(proxies):
            return [(proxy, fit_ins) for proxy in proxies]
        by_partition = sorted(proxies, key=self._partition_of)
        rng = numpy_rng(self.seed, server_round)
        drawn = [int(i) for i in rng.choice(len(by_partition), size=sample_size, replace=False)]
        pids = [self._partition_of(p) for p in by_partition]
        forced = [pids.index(p) for p in self.participation.get(server_round, []) if p in pids]
        if len(forced) > sample_size:
            raise RuntimeError(
                f"round {server_round}: {len(forced)} clients must participate, but only "
                f"{sample_size} are sampled"
            )
        others = [i for i in drawn if i not in forced][: sample_size - len(forced)]
        return [(by_partition[i], fit_ins) for i in sorted(forced + others)]

    def share_partition_map(self, mapping: dict[str, int]) -> None:
        """Use ``mapping`` (client id -> partition id) as this strategy's lookup table.

        Strategies run one after another on one federation (the partition of
        a node never changes) share it, so each asks every client only once,
        not once per strategy: with 100 clients that is ~30 s per experiment.
        """
        self._proxy_partition = mapping

    def _partition_of(self, proxy: ClientProxy) -> int:
        if proxy.cid not in self._proxy_partition:
            res = proxy.get_properties(
                GetPropertiesIns({**self.properties_config, QUERY: PARTITION_ID_QUERY}),
                timeout=None,
                group_id=0,
            )
            self._proxy_partition[proxy.cid] = int(res.properties[PARTITION_ID_QUERY])
        return self._proxy_partition[proxy.cid]

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Legacy adapter: ``FitRes`` to :class:`Reply`, then :meth:`aggregate_replies`."""
        replies = []
        for k, (proxy, res) in enumerate(results):
            pid, problem = read_partition_id(res.metrics)
            replies.append(
                Reply(
                    name=reply_name(k, proxy, pid),
                    partition_id=pid,
                    id_problem=problem,
                    num_examples=res.num_examples,
                    load=functools.partial(parameters_to_ndarrays, res.parameters),
                    metrics=dict(res.metrics) if isinstance(res.metrics, Mapping) else {},
                    active=_active(res),
                )
            )
        arrays, metrics = self.aggregate_replies(
            server_round, replies, [self._describe_failure(f) for f in failures]
        )
        return (None if arrays is None else ndarrays_to_parameters(arrays)), metrics

    def aggregate_replies(
        self,
        server_round: int,
        replies: Sequence[Reply],
        failures: Sequence[str],
        *,
        min_results_key: str = "min_fit_clients",
        initial_key: str = "initial_parameters",
    ) -> tuple[list[np.ndarray] | None, dict[str, Scalar]]:
        """The round, independent of the Flower API: replies in, new global model out.

        Validates every reply (rejections are named and recorded), lets the
        adversary rewrite its rows, runs the rule (with its transforms) and
        moves the global model; see the module docstring.

        Parameters
        ----------
        server_round : int
            The round, from 1.
        replies : sequence of Reply
            The replies that carry a result.
        failures : sequence of str
            One line per client that failed (no result).
        min_results_key, initial_key : str
            Names of the knobs in the API being used, for messages.

        Returns
        -------
        tuple
            The new global model's arrays (``None`` when the round is
            skipped) and the round's metrics.

        Raises
        ------
        TooFewClientsError
            Fewer replies than :attr:`min_results`, or (from the rule)
            fewer valid updates than its bound allows.
        """
        if self.global_params is None or self.layout is None:
            raise RuntimeError(
                f"{type(self).__name__} has no global model: pass {initial_key} "
                "or let the strategy see the model before the first aggregation"
            )
        diag = RoundDiagnostics()
        self.diagnostics[server_round] = diag
        diag.failures = list(failures)
        for reason in diag.failures:
            logger.warning("round %d: a client failed: %s", server_round, reason)
        if len(replies) < self.min_results:
            first = f"; the first failure: {diag.failures[0]}" if failures else ""
            raise TooFewClientsError(
                f"round {server_round}: {len(replies)} client(s) replied, {len(failures)} "
                f"failed; {min_results_key} needs {self.min_results}{first}"
            )
        tagged = [r.partition_id for r in replies if r.active]
        diag.attack_participants = sorted(pid for pid in tagged if pid is not None)
        updates, ctx = self._update_matrix(server_round, replies, diag)
        metrics: dict[str, Scalar] = {
            "num_results": len(replies),
            "num_failures": len(failures),
            "num_rejected": len(diag.rejected),
        }
        if updates.shape[0] == 0:
            diag.skipped = "no valid update"
            logger.warning("round %d: no valid update, the global model is kept", server_round)
            return None, metrics
        if self.adversary is not None:
            updates = self.adversary(updates, ctx)
        try:
            agg = self.aggregate_updates(updates, ctx)
        except RuleTooFewError as err:
            if not (failures or diag.rejected):
                raise
            raise RuleTooFewError(
                f"{err} ({len(failures)} client(s) failed and {len(diag.rejected)} "
                "reply(ies) were rejected this round)"
            ) from err
        rows = ctx.partition_ids
        diag.selected = None if agg.selected is None else [rows[i] for i in agg.selected]
        diag.flagged = None if agg.flagged is None else [rows[i] for i in agg.flagged]
        diag.rule_metrics = dict(agg.metrics)
        metrics.update(agg.metrics)
        if not bool(torch.isfinite(agg.update).all()):
            diag.skipped = "non-finite aggregate"
            logger.warning("round %d: the aggregate is not finite; model kept", server_round)
            return None, metrics
        self.global_params = self.global_params + self.server_lr * self._server_step(agg.update)
        return self.layout.unflatten(self.global_params), metrics

    def _server_step(self, update: torch.Tensor) -> torch.Tensor:
        """The aggregate, or the server momentum ``m <- beta * m + aggregate``."""
        update = update.to(self.device)
        if self.server_momentum == 0:
            return update
        if self.server_momentum_buffer is None:
            self.server_momentum_buffer = torch.zeros_like(update)
        self.server_momentum_buffer = self.server_momentum * self.server_momentum_buffer + update
        return self.server_momentum_buffer

    def _describe_failure(self, failure: tuple[ClientProxy, FitRes] | BaseException) -> str:
        """One line for a failed client: its partition when known, and why."""
        if isinstance(failure, BaseException):
            return f"{type(failure).__name__}: {failure}"
        proxy, res = failure
        pid = self._proxy_partition.get(proxy.cid)
        who = f"partition {pid}" if pid is not None else f"node {proxy.cid}"
        return f"{who}: {res.status.code.name}: {res.status.message}"

    def _update_matrix(
        self,
        server_round: int,
        replies: Sequence[Reply],
        diag: RoundDiagnostics,
    ) -> tuple[torch.Tensor, RoundContext]:
        assert self.layout is not None and self.global_params is not None
        rows: list[np.ndarray] = []
        kept: list[tuple[int, float, dict[str, Any]]] = []
        scale = None if self.gradient_lr is None else np.float32(-self.gradient_lr(server_round))
        claims: dict[int, int] = {}
        for r in replies:
            if r.partition_id is not None:
                claims[r.partition_id] = claims.get(r.partition_id, 0) + 1
        for r in replies:
            flat = None
            pid, reason = r.partition_id, r.id_problem
            if pid is not None and claims[pid] > 1:
                reason = f"partition_id {pid} is claimed by {claims[pid]} replies"
            if reason is None:
                reason = r.problem
            if reason is None:
                reason = check_num_examples(r.num_examples, r.count_key)
            if reason is None:
                flat, reason = decode_arrays(r.load, self.layout)
            if flat is not None and scale is not None:
                with np.errstate(over="ignore"):
                    flat = flat * scale
                if not np.isfinite(flat).all():
                    flat, reason = None, "gradient overflows once scaled by -lr"
            if flat is None:
                logger.warning("round %d: rejected %s: %s", server_round, r.name, reason)
                diag.rejected.append(Rejection(pid, str(reason), r.name))
                continue
            assert pid is not None
            rows.append(flat)
            kept.append((pid, float(r.num_examples), dict(r.metrics)))  # type: ignore[arg-type]
        order = sorted(range(len(kept)), key=lambda i: kept[i][0])
        updates = torch.empty(
            (len(order), self.layout.dim), dtype=torch.float32, device=self.device
        )
        for row, i in enumerate(order):
            updates[row] = torch.from_numpy(rows[i]).to(self.device)
        if scale is None:
            updates -= self.global_params
        diag.partition_ids = [kept[i][0] for i in order]
        generator = round_generator(self.seed, server_round)
        ctx = RoundContext(
            server_round=server_round,
            partition_ids=diag.partition_ids,
            num_examples=torch.tensor([kept[i][1] for i in order], dtype=torch.float32),
            global_params=self.global_params,
            generator=generator,
            client_metrics=[kept[i][2] for i in order],
            local_trainer=self.local_trainer,
        )
        return updates, ctx

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Evaluate centrally, then hand metrics and diagnostics to the round listener."""
        res = super().evaluate(server_round, parameters)
        if self.round_listener is not None:
            record: dict[str, Any] = dict(res[1]) if res is not None else {}
            if res is not None:
                record["loss"] = res[0]
            diag = self.diagnostics.pop(server_round, None)
            if diag is not None:
                record.update(diag.as_record())
            self.round_listener(server_round, record)
        return res


class WrappingStrategy(RobustStrategy):
    """A transform around another rule: ``Wrapper(inner, ...)``.

    Pre-transforms (clipping, bucketing) rewrite ``U`` before calling the
    inner rule; post-transforms (RLR, DP noise) rewrite its aggregate. Only
    the outermost strategy talks to Flower; the inner one is used for its
    :meth:`aggregate_updates` alone.

    Parameters
    ----------
    inner : RobustStrategy
        The wrapped rule.
    **kwargs
        Passed to :class:`RobustStrategy`.
    """

    def __init__(self, inner: RobustStrategy, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner = inner

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Let the inner rule configure the round (DiverseFL asks for samples there)."""
        self.adopt_global(parameters)
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Delegate to the inner rule (subclasses transform around this call)."""
        return self.inner.aggregate_updates(updates, ctx)

    def state_dict(self) -> dict[str, Any]:
        """The transform's state and, under ``"inner"``, the wrapped rule's."""
        return {**super().state_dict(), "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore this transform's state and the wrapped rule's."""
        super().load_state_dict(state)
        self.inner.load_state_dict(state["inner"])


def tensors_to(value: object, device: torch.device) -> object:
    """``value`` with every tensor inside (dict, list, tuple) moved to ``device``."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: tensors_to(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(tensors_to(v, device) for v in value)
    return value


def rule_chain(strategy: RobustStrategy) -> list[RobustStrategy]:
    """The strategy and the rules it wraps (``WrappingStrategy.inner``), outermost first."""
    chain = [strategy]
    while isinstance(inner := getattr(chain[-1], "inner", None), RobustStrategy):
        chain.append(inner)
    return chain
