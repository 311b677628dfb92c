"""The robust strategy base: Flower plumbing done once for every rule.

Each round, :meth:`RobustStrategy.aggregate_fit`

1. turns every ``FitRes`` into one row of the update matrix
   ``U[i] = x_i - x_global`` (float32, on the aggregation device);
2. rejects rows that cannot be aggregated: wrong number or shape of arrays,
   a non-finite value, a non-positive or non-finite sample count. Each
   rejection is logged with the client's partition id and the reason, and
   counted in the round's metrics; a rejected row never reaches a rule;
3. lets the simulation's adversary (omniscient attacks) rewrite the rows of
   the colluding attackers;
4. calls :meth:`RobustStrategy.aggregate_updates` (the rule, possibly wrapped
   by pre/post transforms) on ``U``;
5. moves the global model: ``x_global <- x_global + server_lr * aggregate``,
   unless the aggregate is non-finite, in which case the round is skipped.

Robust rules never trust the client-reported ``num_examples``; the
:class:`RoundContext` carries them for rules where weighting is an explicit
opt-in (``weighted=True``).
"""

from __future__ import annotations

import copy
import logging
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

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

from flsec_flower.aggregation import Adversary, Aggregate, LocalTrainer, RoundContext
from flsec_flower.params import ParamLayout, resolve_device

logger = logging.getLogger("flsec")

RoundListener = Callable[[int, dict], None]
"""``listener(server_round, record)``: receives evaluation metrics and diagnostics."""

PARTITION_ID_QUERY = "partition_id"


class TooFewClientsError(RuntimeError):
    """Fewer clients replied in a round than ``min_fit_clients`` requires."""


@dataclass
class Rejection:
    """A client result that was not aggregated, and why."""

    partition_id: int
    reason: str


@dataclass
class RoundDiagnostics:
    """What the strategy saw and decided in one round, by partition id."""

    partition_ids: list[int] = field(default_factory=list)
    selected: list[int] | None = None
    flagged: list[int] | None = None
    rejected: list[Rejection] = field(default_factory=list)
    skipped: str | None = None
    failures: list[str] = field(default_factory=list)

    def as_record(self) -> dict:
        """Return a JSON-serialisable dictionary."""
        return {
            "participants": self.partition_ids,
            "num_failures": len(self.failures),
            "failures": self.failures,
            "selected": self.selected,
            "flagged": self.flagged,
            "num_rejected": len(self.rejected),
            "rejected": [
                {"partition_id": r.partition_id, "reason": r.reason} for r in self.rejected
            ],
            "skipped": self.skipped,
        }


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
    **kwargs
        Passed to Flower's ``FedAvg`` (``fraction_fit``, ``min_fit_clients``,
        ``evaluate_fn``, ``on_fit_config_fn``, ``initial_parameters`` ...).
    """

    supports_weighting: ClassVar[bool] = False
    """Whether the rule can weight clients by reported sample counts (``weighted=True``)."""

    state_attributes: ClassVar[tuple[str, ...]] = ()
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
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        if weighted and not self.supports_weighting:
            raise ValueError(
                f"weighted=True: {type(self).__name__} does not weight clients by sample counts"
            )
        if not np.isfinite(server_lr):
            raise ValueError(f"server_lr must be finite, got {server_lr!r}")
        self.server_lr = float(server_lr)
        self.device = resolve_device(device)
        self.weighted = weighted
        self.seed = seed
        self.layout: ParamLayout | None = None
        self.global_params: torch.Tensor | None = None
        self.adversary: Adversary | None = None
        self.local_trainer: LocalTrainer | None = None
        self.malicious_partition_ids: frozenset[int] = frozenset()
        self.round_listener: RoundListener | None = None
        self.min_results = 1
        self.diagnostics: dict[int, RoundDiagnostics] = {}
        self._proxy_partition: dict[str, int] = {}
        self.registration_timeout = 120
        self.properties_config: dict[str, Scalar] = {}

    # ------------------------------------------------------------------ rule
    @abstractmethod
    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Aggregate the update matrix ``updates`` (shape ``(n, d)``) into one update."""

    # ---------------------------------------------------------------- resume
    def state_dict(self) -> dict:
        """The strategy's state across rounds: the global model and :attr:`state_attributes`.

        Values are deep copies, so later rounds do not change a saved state.
        """
        return {
            "global_params": copy.deepcopy(self.global_params),
            "attributes": {n: copy.deepcopy(getattr(self, n)) for n in self.state_attributes},
        }

    def load_state_dict(self, state: dict) -> None:
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
        missing = [name for name in self.state_attributes if name not in attributes]
        if missing:
            raise ValueError(f"{type(self).__name__}: saved state lacks {missing}")
        for name in self.state_attributes:
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

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Sample clients reproducibly: a seeded draw over partition ids.

        All clients are taken when the sample size covers them; otherwise each
        client's partition id is asked once (``get_properties``) so the draw
        depends on the seed and the round only, not on node ids.
        """
        config = self.on_fit_config_fn(server_round) if self.on_fit_config_fn else {}
        fit_ins = FitIns(parameters, config)
        sample_size, min_num = self.num_fit_clients(client_manager.num_available())
        if not client_manager.wait_for(min_num, timeout=self.registration_timeout):
            raise RuntimeError(
                f"round {server_round}: only {client_manager.num_available()} of {min_num} "
                f"clients registered within {self.registration_timeout} s; the federation "
                "needs one SuperNode per client (data.num_clients)"
            )
        proxies = list(client_manager.all().values())
        if sample_size >= len(proxies):
            return [(proxy, fit_ins) for proxy in proxies]
        by_partition = sorted(proxies, key=self._partition_of)
        rng = np.random.default_rng([self.seed, server_round])
        chosen = sorted(rng.choice(len(by_partition), size=sample_size, replace=False))
        return [(by_partition[i], fit_ins) for i in chosen]

    def _partition_of(self, proxy: ClientProxy) -> int:
        if proxy.cid not in self._proxy_partition:
            res = proxy.get_properties(
                GetPropertiesIns({**self.properties_config, "query": PARTITION_ID_QUERY}),
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
        """Validate the results, run the rule and move the global model."""
        if self.global_params is None or self.layout is None:
            raise RuntimeError(
                f"{type(self).__name__} has no global model: pass initial_parameters"
            )
        diag = RoundDiagnostics()
        self.diagnostics[server_round] = diag
        diag.failures = [self._describe_failure(f) for f in failures]
        for reason in diag.failures:
            logger.warning("round %d: a client failed: %s", server_round, reason)
        if len(results) < self.min_results:
            first = f"; the first failure: {diag.failures[0]}" if failures else ""
            raise TooFewClientsError(
                f"round {server_round}: {len(results)} client(s) replied, {len(failures)} "
                f"failed; min_fit_clients needs {self.min_results}{first}"
            )
        updates, ctx = self._update_matrix(server_round, results, diag)
        metrics: dict[str, Scalar] = {
            "num_results": len(results),
            "num_failures": len(failures),
            "num_rejected": len(diag.rejected),
        }
        if updates.shape[0] == 0:
            diag.skipped = "no valid update"
            logger.warning("round %d: no valid update, the global model is kept", server_round)
            return None, metrics
        if self.adversary is not None:
            updates = self.adversary(updates, ctx)
        agg = self.aggregate_updates(updates, ctx)
        rows = ctx.partition_ids
        diag.selected = None if agg.selected is None else [rows[i] for i in agg.selected]
        diag.flagged = None if agg.flagged is None else [rows[i] for i in agg.flagged]
        if not bool(torch.isfinite(agg.update).all()):
            diag.skipped = "non-finite aggregate"
            logger.warning("round %d: the aggregate is not finite; model kept", server_round)
            return None, metrics
        self.global_params = self.global_params + self.server_lr * agg.update.to(self.device)
        return ndarrays_to_parameters(self.layout.unflatten(self.global_params)), metrics

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
        results: list[tuple[ClientProxy, FitRes]],
        diag: RoundDiagnostics,
    ) -> tuple[torch.Tensor, RoundContext]:
        assert self.layout is not None and self.global_params is not None
        rows: list[np.ndarray] = []
        kept: list[tuple[int, float, dict]] = []
        for _, res in results:
            pid = int(res.metrics.get("partition_id", -1))
            arrays = parameters_to_ndarrays(res.parameters)
            reason = self.layout.mismatch(arrays)
            if reason is None:
                flat = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in arrays])
                if not np.isfinite(flat).all():
                    reason = "update has non-finite values"
                elif not (np.isfinite(res.num_examples) and res.num_examples > 0):
                    reason = f"num_examples={res.num_examples} is not a positive count"
            if reason is not None:
                logger.warning("round %d: rejected partition %d: %s", server_round, pid, reason)
                diag.rejected.append(Rejection(pid, reason))
                continue
            rows.append(flat)
            kept.append((pid, float(res.num_examples), dict(res.metrics)))
        order = sorted(range(len(kept)), key=lambda i: kept[i][0])
        updates = torch.empty(
            (len(order), self.layout.dim), dtype=torch.float32, device=self.device
        )
        for row, i in enumerate(order):
            updates[row] = torch.from_numpy(rows[i]).to(self.device)
        updates -= self.global_params
        diag.partition_ids = [kept[i][0] for i in order]
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + server_round)
        ctx = RoundContext(
            server_round=server_round,
            partition_ids=diag.partition_ids,
            num_examples=torch.tensor([kept[i][1] for i in order], dtype=torch.float32),
            global_params=self.global_params,
            generator=generator,
            client_metrics=[kept[i][2] for i in order],
            local_trainer=self.local_trainer,
            malicious_partition_ids=self.malicious_partition_ids,
        )
        return updates, ctx

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Evaluate centrally, then hand metrics and diagnostics to the round listener."""
        res = super().evaluate(server_round, parameters)
        if self.round_listener is not None:
            record: dict = dict(res[1]) if res is not None else {}
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

    def __init__(self, inner: RobustStrategy, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.inner = inner

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """Let the inner rule configure the round (DiverseFL asks for samples there)."""
        return self.inner.configure_fit(server_round, parameters, client_manager)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Delegate to the inner rule (subclasses transform around this call)."""
        return self.inner.aggregate_updates(updates, ctx)

    def state_dict(self) -> dict:
        """The transform's state and, under ``"inner"``, the wrapped rule's."""
        return {**super().state_dict(), "inner": self.inner.state_dict()}

    def load_state_dict(self, state: dict) -> None:
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
