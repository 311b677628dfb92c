"""The Message-API face of every rule: ``MessageStrategy(Bucketing(Krum(f=1), s=2))``.

Flower 1.41's Message API (``ServerApp`` with ``@app.main()``, a ``Grid``,
``flwr.serverapp.strategy``) hands a strategy ``Message`` replies that carry
one ``ArrayRecord`` (the model) and one ``MetricRecord`` (with the sample
count under ``weighted_by_key``). :class:`MessageStrategy` is a subclass of
Flower's Message-API ``FedAvg``, as Flower's own ``Krum`` is, driven by the
same rule objects as the legacy API: it turns each reply into a
:class:`~strategies.base.Reply` and calls the rule's
:meth:`~strategies.base.RobustStrategy.aggregate_replies`, so validation,
the adversary hook, transforms (bucketing, clipping, RLR, DP noise), the
server step and the diagnostics are the legacy ones, line for line.

Differences from Flower's ``FedAvg`` that a user sees:

- a hostile reply (two ArrayRecords, arrays that do not match the model,
  NaN/Inf, a missing or absurd ``num-examples``) is rejected alone, named,
  and the round goes on; Flower's raises ``InconsistentMessageReplies`` for
  the whole round;
- waiting for nodes stops after ``registration_timeout`` seconds when given
  (Flower's waits without limit);
- nodes are sampled by a seeded draw (``seed``, round) over sorted node ids;
- the round's metrics are the rule's (``num_results``, ``num_rejected``,
  ``f_used`` ...), not an average of client metrics an attacker controls.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from flsec_flower.seeds import numpy_rng
from flsec_flower.wire import ARRAYS, ATTACK_ACTIVE, CONFIG, MESSAGE_SERVER_ROUND, NUM_EXAMPLES
from strategies.base import (
    RegistrationTimeoutError,
    Reply,
    RobustStrategy,
    check_num_examples,
    read_partition_id,
    rule_chain,
)

logger = logging.getLogger("flsec")


def _finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


class MessageStrategy(FedAvg):
    """A flsec rule (with its transforms) as a Flower Message-API strategy.

    Parameters
    ----------
    rule : RobustStrategy
        The rule, e.g. ``Bucketing(Krum(f=1), s=2)``; the same object the
        legacy API uses. Its ``server_lr``, ``seed``, ``device``,
        ``min_results``, adversary and trainer hooks apply here too.
    fraction_train, fraction_evaluate : float
        Fractions of connected nodes sampled for training and evaluation.
    min_train_nodes, min_evaluate_nodes, min_available_nodes : int
        As in Flower's ``FedAvg`` (default 2 each): what the user gives.
    registration_timeout : float, optional
        Seconds a round waits for enough nodes to connect before it fails
        with :class:`~strategies.base.RegistrationTimeoutError`; ``None``
        (default) waits without limit, as Flower's ``FedAvg``.
    partition_id_key : str, optional
        MetricRecord key with which clients report a partition id, used as
        the row's identity (rules with per-client state, diagnostics). By
        default the sender's node id (set by the SuperLink, not by the
        client) identifies the row.
    weighted_by_key, arrayrecord_key, configrecord_key : str
        As in Flower's ``FedAvg``; ``weighted_by_key`` holds the sample count.
    evaluate_metrics_aggr_fn : callable, optional
        As in Flower's ``FedAvg``; by default evaluation metrics are averaged
        over the replies whose records are well formed and finite.

    Examples
    --------
    >>> from strategies import Bucketing, Krum
    >>> strategy = MessageStrategy(Bucketing(Krum(f=1), s=2, device="cpu"), min_train_nodes=8)
    >>> type(strategy.rule).__name__, strategy.min_train_nodes
    ('Bucketing', 8)
    """

    def __init__(
        self,
        rule: RobustStrategy,
        *,
        fraction_train: float = 1.0,
        fraction_evaluate: float = 1.0,
        min_train_nodes: int = 2,
        min_evaluate_nodes: int = 2,
        min_available_nodes: int = 2,
        registration_timeout: float | None = None,
        partition_id_key: str | None = None,
        weighted_by_key: str = NUM_EXAMPLES,
        arrayrecord_key: str = ARRAYS,
        configrecord_key: str = CONFIG,
        evaluate_metrics_aggr_fn: Callable[..., Any] | None = None,
    ) -> None:
        if not isinstance(rule, RobustStrategy):
            raise TypeError(f"rule must be a flsec RobustStrategy, got {type(rule).__name__}")
        if registration_timeout is not None and not registration_timeout > 0:
            raise ValueError(
                f"registration_timeout must be positive or None, got {registration_timeout!r}"
            )
        super().__init__(
            fraction_train=fraction_train,
            fraction_evaluate=fraction_evaluate,
            min_train_nodes=min_train_nodes,
            min_evaluate_nodes=min_evaluate_nodes,
            min_available_nodes=min_available_nodes,
            weighted_by_key=weighted_by_key,
            arrayrecord_key=arrayrecord_key,
            configrecord_key=configrecord_key,
            evaluate_metrics_aggr_fn=evaluate_metrics_aggr_fn or self._evaluate_metrics,
        )
        self.rule = rule
        for node in rule_chain(rule):
            if not node.message_api:
                logger.warning(
                    "flsec rule %s needs a legacy-API exchange the Message API lacks (see its "
                    "docstring); give it what it needs before the first round",
                    type(node).__name__,
                )
        self.registration_timeout = registration_timeout
        self.partition_id_key = partition_id_key
        self.array_keys: list[str] | None = None

    # ------------------------------------------------------------- summary
    def summary(self) -> None:
        """Log the rule and Flower's sampling settings."""
        logger.info("flsec rule: %s", _describe(self.rule))
        super().summary()

    # ------------------------------------------------------------ sampling
    def _sample(self, grid: Grid, fraction: float, minimum: int, server_round: int) -> list[int]:
        """Wait for enough nodes (up to ``registration_timeout``), then draw a seeded sample."""
        sample_size = max(int(len(list(grid.get_node_ids())) * fraction), minimum)
        needed = max(self.min_available_nodes, sample_size)
        deadline = None if self.registration_timeout is None else time.monotonic()
        while len(nodes := sorted(grid.get_node_ids())) < needed:
            waited = 0.0 if deadline is None else time.monotonic() - deadline
            if self.registration_timeout is not None and waited >= self.registration_timeout:
                raise RegistrationTimeoutError(
                    f"round {server_round}: only {len(nodes)} of {needed} nodes connected "
                    f"within registration_timeout={self.registration_timeout} s "
                    f"(min_available_nodes={self.min_available_nodes}, "
                    f"min_train_nodes={self.min_train_nodes})"
                )
            logger.info("waiting for nodes: %d connected, %d needed", len(nodes), needed)
            time.sleep(1.0)
        if sample_size >= len(nodes):
            return nodes
        rng = numpy_rng(self.rule.seed, server_round)
        return sorted(nodes[int(i)] for i in rng.choice(len(nodes), sample_size, replace=False))

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Adopt the global model if the rule has none, sample nodes, send ``arrays``."""
        self._adopt(arrays)
        if self.fraction_train == 0.0:
            return []
        nodes = self._sample(grid, self.fraction_train, self.min_train_nodes, server_round)
        config[MESSAGE_SERVER_ROUND] = server_round
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(content, nodes, MessageType.TRAIN)

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample nodes for federated evaluation as :meth:`configure_train` does."""
        if self.fraction_evaluate == 0.0:
            return []
        nodes = self._sample(grid, self.fraction_evaluate, self.min_evaluate_nodes, server_round)
        config[MESSAGE_SERVER_ROUND] = server_round
        content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: config})
        return self._construct_messages(content, nodes, MessageType.EVALUATE)

    def _adopt(self, arrays: ArrayRecord) -> None:
        if self.array_keys is None:
            self.array_keys = list(arrays.keys())
        if self.rule.global_params is None:
            self.rule.set_global(arrays.to_numpy_ndarrays())

    # --------------------------------------------------------- aggregation
    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Message adapter: replies to :class:`~strategies.base.Reply`, then the rule's core."""
        results, failures = [], []
        for k, msg in enumerate(replies):
            node = msg.metadata.src_node_id
            if msg.has_error():
                failures.append(f"node {node}: {msg.error.reason}")
            else:
                results.append(self._reply(k, msg))
        arrays, metrics = self.rule.aggregate_replies(
            server_round,
            results,
            failures,
            min_results_key="min_results of the rule",
            initial_key="initial_arrays to start()",
        )
        record = MetricRecord(
            {
                k: float(v)
                for k, v in metrics.items()
                if isinstance(v, (int, float)) and _finite_number(v)
            }
        )
        if arrays is None:
            return None, record
        assert self.array_keys is not None
        new = {key: Array(a) for key, a in zip(self.array_keys, arrays, strict=True)}
        return ArrayRecord(new), record

    def _reply(self, k: int, msg: Message) -> Reply:
        """One reply as the core sees it; a malformed record gives a reason to reject it."""
        node = msg.metadata.src_node_id
        content = msg.content
        metric_records = list(content.metric_records.values())
        array_records = list(content.array_records.values())
        metrics = dict(metric_records[0]) if len(metric_records) == 1 else {}
        problem = None
        if len(array_records) != 1:
            problem = f"expected one ArrayRecord, got {len(array_records)}"
        elif len(metric_records) != 1:
            problem = f"expected one MetricRecord, got {len(metric_records)}"
        elif self.array_keys is not None and list(array_records[0].keys()) != self.array_keys:
            problem = (
                f"ArrayRecord keys {list(array_records[0].keys())} are not the model's "
                f"{self.array_keys}"
            )
        pid: int | None
        if self.partition_id_key is None:
            pid, id_problem, name = node, None, f"node {node}"
        else:
            pid, id_problem = read_partition_id(metrics, self.partition_id_key)
            name = f"partition {pid}" if pid is not None else f"node {node} (reply {k})"
        return Reply(
            name=name,
            partition_id=pid,
            id_problem=id_problem,
            num_examples=metrics.get(self.weighted_by_key),
            load=array_records[0].to_numpy_ndarrays if len(array_records) == 1 else list,
            metrics=metrics,
            active=metrics.get(ATTACK_ACTIVE) == 1,
            problem=problem,
            count_key=self.weighted_by_key,
        )

    def _evaluate_metrics(self, contents: list[Any], weighted_by_key: str) -> MetricRecord:
        """Weighted mean of the evaluation metrics of well-formed replies; others are dropped."""
        sums: dict[str, float] = {}
        total = 0.0
        for content in contents:
            records = list(content.metric_records.values())
            if len(records) != 1:
                continue
            weight = records[0].get(weighted_by_key)
            if check_num_examples(weight, weighted_by_key) is not None:
                continue
            values = {k: v for k, v in records[0].items() if k != weighted_by_key}
            if not all(_finite_number(v) for v in values.values()):
                continue
            total += float(weight)
            for key, value in values.items():
                sums[key] = sums.get(key, 0.0) + float(weight) * float(value)
        return MetricRecord({k: v / total for k, v in sums.items()} if total else {})

    def _check_and_log_replies(
        self, replies: Iterable[Message], is_train: bool, validate: bool = True
    ) -> tuple[list[Message], list[Message]]:
        """Split replies into those with content and errors; never reject the whole round."""
        return super()._check_and_log_replies(replies, is_train, validate=False)


def _describe(rule: RobustStrategy) -> str:
    """``Bucketing(Krum)``: the rule and the rules it wraps."""
    inner = getattr(rule, "inner", None)
    name = type(rule).__name__
    return f"{name}({_describe(inner)})" if isinstance(inner, RobustStrategy) else name
