"""Types shared by every aggregation rule, wrapper and the strategy base.

A rule is a pure function ``rule(updates, ...) -> Aggregate`` on the update
matrix ``U`` (float32, shape ``(n, d)``, one row per client, on any device).
The strategy base builds ``U`` from Flower's ``FitRes`` and a
:class:`RoundContext` that describes the round; rules and wrappers never see a
Flower type.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Protocol

import torch

from flsec_flower.wire import ATTACK_ACTIVE

ATTACK_ACTIVE_METRIC = ATTACK_ACTIVE
"""Fit-metrics key an attacking client sets to ``True`` in the rounds it attacks."""


@dataclass
class Aggregate:
    """Result of a rule.

    Parameters
    ----------
    update : torch.Tensor
        Aggregated update, shape ``(d,)``; the server adds ``server_lr * update``.
    selected : list of int, optional
        Rows of ``U`` the rule kept (Krum's winner, Multi-Krum's set, ...).
    flagged : list of int, optional
        Rows of ``U`` the rule flagged as malicious and dropped.
    scores : torch.Tensor, optional
        One score per row (Krum score, trust score, ...), for diagnostics.
    metrics : dict
        Numbers the rule reports for the round (e.g. ``f_used``, the number
        of Byzantine clients a rule with ``f`` actually tolerated); the
        strategy base adds them to the round's metrics. Wrappers pass them on.
    """

    update: torch.Tensor
    selected: list[int] | None = None
    flagged: list[int] | None = None
    scores: torch.Tensor | None = None
    metrics: dict[str, int | float] = field(default_factory=dict)


class LocalTrainer(Protocol):
    """The clients' honest local procedure, run on the server (DiverseFL, FLTrust, Fang ERR/LFR).

    ``trainer(global_flat, x, y, steps=None, server_round=1, reference_size=None)
    -> update_flat`` trains a copy of the global model on ``(x, y)`` with the
    run's training settings (the learning rate of ``server_round``; a
    fractional batch size taken of ``reference_size`` examples, default
    ``len(x)``), for the configured epochs or exactly ``steps`` mini-batch
    steps, and returns the update ``x_trained - x_global``.
    """

    def __call__(
        self,
        global_flat: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        steps: int | None = None,
        server_round: int = 1,
        reference_size: int | None = None,
    ) -> torch.Tensor:
        """Return the update of one local training run from ``global_flat``."""

    def steps_for(self, num_examples: int) -> int:
        """Mini-batch steps a client with ``num_examples`` examples takes in one round."""

    def evaluate(self, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Loss and error rate of the model ``flat`` on ``(x, y)`` (Fang et al.'s ERR/LFR)."""


@dataclass
class RoundContext:
    """What a rule may know about the round beyond the update matrix.

    It holds nothing a real server lacks: the simulation's ground truth (who
    is malicious) is no part of it. The simulation-only reference rule
    (OracleSGD) and the adversary get it at construction; detection scores
    are computed by the run's recorder (:mod:`flsec_flower.results`).

    Parameters
    ----------
    server_round : int
        Current round, starting at 1.
    partition_ids : list of int
        Partition id of the client behind each row of ``U``.
    num_examples : torch.Tensor
        Client-reported sample counts, shape ``(n,)``. Untrusted: robust rules
        ignore them unless weighting is explicitly asked for.
    global_params : torch.Tensor
        Current global model, flat, shape ``(d,)``.
    generator : torch.Generator
        Seeded per round (``seed`` and ``server_round``) on the CPU; use it for
        every random choice so runs are reproducible.
    client_metrics : list of dict
        The fit metrics each client reported, row-aligned with ``U``.
    local_trainer : LocalTrainer, optional
        The honest local procedure (for DiverseFL and FLTrust's server update).
    on_too_few : str, optional
        Overrides the ``on_too_few`` policy of rules with a Byzantine bound
        (set by Bucketing for the rule it wraps); ``None``: each rule's own.
    """

    server_round: int
    partition_ids: list[int]
    num_examples: torch.Tensor
    global_params: torch.Tensor
    generator: torch.Generator
    client_metrics: list[dict] = field(default_factory=list)
    local_trainer: LocalTrainer | None = None
    on_too_few: str | None = None

    def subset(self, rows: list[int]) -> RoundContext:
        """Return the context restricted to ``rows`` (in that order)."""
        index = torch.as_tensor(rows, dtype=torch.long)
        return replace(
            self,
            partition_ids=[self.partition_ids[r] for r in rows],
            num_examples=self.num_examples[index.to(self.num_examples.device)],
            client_metrics=[self.client_metrics[r] for r in rows] if self.client_metrics else [],
        )


Adversary = Callable[[torch.Tensor, RoundContext], torch.Tensor]
"""``adversary(U, ctx) -> U'``: the simulation's model of colluding omniscient attackers.

It rewrites the attackers' rows of ``U`` (those whose partition id is an
attacker's, given to the adversary at construction, and whose fit metrics tag
them) before the defence runs. This models collusion in simulation; it is no
part of a defence.
"""
