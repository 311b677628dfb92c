"""3DFed: a constrained backdoor, zero-sum noise masks, decoy models, indicators read back."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.common import NDArrays, Scalar
from torch import nn

from clients.attack import AttackClient, check_classes
from clients.model_poisoning import check_number
from clients.model_replacement import alpha_weighted, anomaly_loss
from clients.pixel_trojan import PixelTrigger, backdoor_metric
from clients.three_dfed_parts import (
    decoy_positions,
    flatten,
    indicator_positions,
    mask_scale,
    mask_support,
    output_layer,
    read_indicators,
    tune_alpha,
    tune_decoys,
    unflatten,
    zero_sum_masks,
)
from flsec_flower.config import ExperimentConfig
from flsec_flower.data import Dataset
from flsec_flower.evaluation import ServerMetric
from flsec_flower.experiment import ClientEnv, client_seed, malicious_ids
from flsec_flower.models import get_weights
from flsec_flower.seeds import BatchStream, Stream, numpy_rng
from flsec_flower.training import for_round, train_local

MEMORY = "three_dfed_memory"
"""Name of what the attacker keeps for the next round, in its :class:`ClientState`."""

ALPHA = "three_dfed_alpha"
r"""Fit-metrics key: the noise masks' trade-off :math:`\alpha` of this round."""

ACCEPTED = "three_dfed_accepted"
"""Fit-metrics key: the share of last round's backdoor indicators read as accepted."""

WEAK_DP = "three_dfed_weak_dp"
"""Fit-metrics key: whether last round's feedback showed server noise (tuning disabled)."""

DECOYS = "three_dfed_decoys"
"""Fit-metrics key: how many of the attackers send a decoy model this round."""

DECOY = "three_dfed_decoy"
"""Fit-metrics key: whether this attacker sends a decoy model this round."""


@dataclass(frozen=True)
class ThreeDFed:
    r"""Parameters of :class:`ThreeDFedClient`.

    ``target_class`` .. ``poison_fraction`` are those of
    :class:`~clients.pixel_trojan.PixelTrigger` (the authors' MNIST
    ``poisoning_proportion`` 1.0 with separate clean batches; here one
    poisoned share).

    Parameters
    ----------
    constraint_weight : float
        :math:`\lambda_c` of the constrained loss :math:`(1-\lambda_c)
        L_{CE} + \lambda_c \lVert \theta - G \rVert_2`, in ``[0, 1)``
        (0.4: the authors' ``eu_constraint`` scale).
    max_scale : float
        Cap of the scaling up to the benign norm (the authors'
        ``fl_weight_scale``, 5).
    mask_neurons : int
        Output neurons (not ``target_class``) the masks cover (``fl_num_neurons``: 8).
    mask_alpha : float
        Lower end of :math:`\alpha`'s range, in ``[0, 1)`` (``noise_mask_alpha``: 0).
    mask_std : float
        :math:`\sigma` of the masks (the authors' MNIST initialisation, 0.05).
    indicator_value : float
        :math:`v`, the update each attacker writes at its indicator, ``> 0``.
    reject_threshold : float
        :math:`\tau` of :func:`read_indicators` (1e-4: the authors' MNIST value).
    decoys : int
        Decoy models in the first active round (the authors start with 0);
        tuned each round after (:func:`tune_decoys`).
    max_decoys : int, optional
        Cap of the decoy count, at most ``M - 1`` in any case (one attacker
        sends the backdoor); 0 is 3DFed without decoy models.
    decoy_shift : float
        :math:`\delta`, how far a decoy moves its coordinate past the
        benign model (the authors' threshold, 10), ``> 0``.
    """

    target_class: int = 8
    pattern: str = "plus"
    trigger_size: int | None = None
    offset: list[int] | None = None
    mask: list[list[int]] | None = None
    value: float = 1.0
    source_class: int | None = None
    poison_fraction: float = 0.5
    constraint_weight: float = 0.4
    max_scale: float = 5.0
    mask_neurons: int = 8
    mask_alpha: float = 0.0
    mask_std: float = 0.05
    indicator_value: float = 0.05
    reject_threshold: float = 1e-4
    decoys: int = 0
    max_decoys: int | None = None
    decoy_shift: float = 10.0

    def __post_init__(self) -> None:
        """Check the fields that do not depend on the data."""
        if not 0.0 <= self.constraint_weight < 1.0:
            raise ValueError(
                f"constraint_weight: got {self.constraint_weight!r}, must be in [0, 1)"
            )
        check_number("max_scale", self.max_scale, at_least=1)
        if isinstance(self.mask_neurons, bool) or not (
            isinstance(self.mask_neurons, int) and self.mask_neurons >= 1
        ):
            raise ValueError(f"mask_neurons: got {self.mask_neurons!r}, must be an integer >= 1")
        if not 0.0 <= self.mask_alpha < 1.0:
            raise ValueError(f"mask_alpha: got {self.mask_alpha!r}, must be in [0, 1)")
        check_number("mask_std", self.mask_std, at_least=0)
        check_number("indicator_value", self.indicator_value, above=0)
        check_number("reject_threshold", self.reject_threshold, above=0)
        for key in ("decoys", "max_decoys"):
            count = getattr(self, key)
            if count is not None and (
                isinstance(count, bool) or not isinstance(count, int) or count < 0
            ):
                raise ValueError(f"{key}: got {count!r}, must be an integer >= 0")
        if self.max_decoys is not None and self.decoys > self.max_decoys:
            raise ValueError(f"decoys: got {self.decoys}, more than max_decoys={self.max_decoys}")
        check_number("decoy_shift", self.decoy_shift, above=0)

    def decoy_cap(self, attackers: int) -> int:
        """Most decoys ``attackers`` colluders send in a round (``max_decoys``, ``<= M - 1``)."""
        cap = attackers - 1 if self.max_decoys is None else self.max_decoys
        return max(0, min(cap, attackers - 1))

    def check_attackers(self, attackers: int) -> None:
        """Raise naming ``decoys`` if ``attackers`` colluders cannot send that many decoys."""
        if self.decoys > self.decoy_cap(attackers):
            raise ValueError(
                f"decoys: got {self.decoys}, at most {self.decoy_cap(attackers)} with "
                f"{attackers} attackers (max_decoys={self.max_decoys}; one attacker sends "
                "the backdoor)"
            )

    def trigger(self) -> PixelTrigger:
        """The data poisoning."""
        names = ("target_class", "pattern", "trigger_size", "offset", "mask", "value")
        fields = {k: getattr(self, k) for k in (*names, "source_class", "poison_fraction")}
        return PixelTrigger(**fields)


@dataclass(frozen=True)
class Colluder:
    r"""Who crafts: rank ``r`` among ``count`` colluding attackers sharing ``seed``.

    Every shared choice of a round (the masked neurons, the masks,
    :math:`\alpha`, the decoy count) is drawn from ``seed``, so attackers that
    share it agree without messages.
    """

    rank: int
    count: int
    seed: int
    num_classes: int

    def __post_init__(self) -> None:
        """Check the rank."""
        if not 0 <= self.rank < self.count:
            raise ValueError(f"rank: got {self.rank!r}, must be in 0..{self.count - 1}")

    def rng(self, server_round: int, purpose: int) -> np.random.Generator:
        """The stream every colluder draws the same shared choices of a round from."""
        return numpy_rng(self.seed, Stream.THREE_DFED, server_round, purpose)


@dataclass(frozen=True)
class Crafted:
    """What :func:`craft_update` returns: the model sent, the memory kept, the fit metrics."""

    weights: NDArrays
    memory: list[np.ndarray]
    metrics: dict[str, Scalar]


def recall(
    memory: list[np.ndarray] | None, global_weights: NDArrays, server_round: int
) -> tuple[np.ndarray, float, int, np.ndarray] | None:
    """Last round's indicators, alpha, decoy count and flat global model, if kept then."""
    if memory is None or int(memory[0][0]) != server_round - 1:
        return None
    previous = memory[3:]
    if [p.shape for p in previous] != [np.shape(g) for g in global_weights]:
        return None
    return memory[1].astype(np.int64), float(memory[2][0]), int(memory[2][1]), flatten(previous)


def shared_tuning(
    p: ThreeDFed,
    who: Colluder,
    global_flat: np.ndarray,
    last: tuple[np.ndarray, float, int, np.ndarray] | None,
    server_round: int,
) -> tuple[float, int, dict[str, Scalar]]:
    r""":math:`\alpha` and the decoy count of this round, tuned from last round's indicators."""
    rng = who.rng(server_round, 0)
    floor = p.mask_alpha
    if last is None:
        return min(max(float(rng.uniform(floor, 1.0)), 0.01), 0.99), p.decoys, {}
    positions, alpha, decoys, previous = last
    feedback = (global_flat - previous)[positions] / p.indicator_value
    accept, weak_dp = read_indicators(feedback, p.reject_threshold)
    backdoor, decoy = accept[: who.count - decoys], accept[who.count - decoys :]
    metrics: dict[str, Scalar] = {WEAK_DP: weak_dp}
    if not weak_dp:
        metrics[ACCEPTED] = backdoor.count("a") / len(backdoor)
    alpha = tune_alpha(alpha, backdoor, weak_dp, floor, rng)
    return alpha, tune_decoys(decoys, backdoor, decoy, weak_dp, p.decoy_cap(who.count)), metrics


def craft_update(
    p: ThreeDFed,
    who: Colluder,
    global_weights: NDArrays,
    trained: NDArrays,
    benign: NDArrays,
    memory: list[np.ndarray] | None,
    server_round: int,
) -> Crafted:
    r"""One attacker's reply in an active round (steps 1-4 of :class:`ThreeDFedClient`).

    Parameters
    ----------
    p : ThreeDFed
        The attack's parameters.
    who : Colluder
        The attacker's rank, the number of attackers and their shared seed.
    global_weights, trained, benign : NDArrays
        :math:`G`, the backdoored model and the benign model.
    memory : list of numpy.ndarray, optional
        What the attacker kept in the previous active round.
    server_round : int
        The round.

    Returns
    -------
    Crafted
        The model to send, the memory to keep, the fit metrics.
    """
    g = flatten(global_weights)
    last = recall(memory, global_weights, server_round)
    alpha, decoys, metrics = shared_tuning(p, who, g, last, server_round)
    senders = who.count - decoys
    metrics.update({ALPHA: alpha, DECOYS: decoys, DECOY: who.rank >= senders})
    update = flatten(trained) - g
    benign_update = flatten(benign) - g
    norm = float(np.linalg.norm(update))
    scale = 1.0
    if 0.0 < norm < math.inf:
        scale = max(1.0, min(float(np.linalg.norm(benign_update)) / norm, p.max_scale))
    others = [c for c in range(who.num_classes) if c != p.target_class]
    neurons = who.rng(server_round, 1).permutation(others)[: p.mask_neurons]
    support = mask_support(global_weights, who.num_classes, neurons)
    flat_support = np.concatenate([m.ravel() for m in support])
    out, _ = output_layer(global_weights, who.num_classes)
    layer = max((i for i in range(out) if np.ndim(global_weights[i]) >= 2), default=out)
    start = sum(np.size(w) for w in global_weights[:layer])
    stop = start + np.size(global_weights[layer])
    change = g[start:stop] - (g if last is None else last[3])[start:stop]
    local = indicator_positions(change, support[layer], who.count)
    if who.rank < senders:
        masks = zero_sum_masks(
            int(flat_support.sum()),
            senders,
            mask_scale(alpha, p.mask_std),
            who.rng(server_round, 2),
        )
        sent = g + scale * update
        sent[flat_support] += masks[who.rank]
    else:
        excluded = support[layer].ravel().copy()
        excluded[local] = True
        shifted = decoy_positions(
            scale * update[start:stop], benign_update[start:stop], excluded, decoys
        )
        sent = g + benign_update
        sent[start + shifted[who.rank - senders]] += p.decoy_shift
    positions = start + local
    own = positions[who.rank]
    sent[own] = g[own] + p.indicator_value
    kept = [np.array([server_round]), positions, np.array([alpha, decoys]), *global_weights]
    return Crafted(unflatten(sent, global_weights), kept, metrics)


class ThreeDFedClient(AttackClient):
    r"""3DFed (Li, Pang, Wu, Sun, Wang & Zhou, IEEE S&P 2023): masks, indicators, decoys.

    Li et al., "3DFed: Adaptive and Extensible Framework for Covert Backdoor
    Attack in Federated Learning", IEEE S&P 2023, as their code
    (``haoyangliASTAPLE/3DFed``) runs it. In every active round each of the
    ``M`` attackers (rank ``r`` among the configured attackers), from the
    global model ``G``, with ``k`` decoy models this round
    (:func:`craft_update`):

    1. *Constrained backdoor.* It trains a benign model (its clean data,
       :math:`\Delta_{ben}`) and a backdoored one on its data with the pixel
       trigger, minimising :math:`(1-\lambda_c) L_{CE} + \lambda_c \lVert
       \theta - G \rVert_2` (:math:`\Delta_{bd}`), and scales it up towards
       the benign norm: :math:`s = \max(1, \min(\lVert\Delta_{ben}\rVert /
       \lVert\Delta_{bd}\rVert, \mathrm{max\_scale}))`.
    2. *Noise masks.* ``mask_neurons`` output neurons other than the target
       are drawn; the masks :math:`m_1 .. m_{M-k}` of the backdoor senders
       live on their rows of the output layer and sum to zero
       (:func:`zero_sum_masks`, scale :func:`mask_scale` of :math:`\alpha`),
       so the aggregate is unchanged while each attacker's update looks
       different (the authors also aim to raise the non-target neurons'
       update energy, which DeepSight inspects).
    3. *Decoy models.* A decoy is a benign model with one parameter pushed
       far off, for a clustering or outlier detector to spend its
       "malicious" label on, while the masked backdoors pass with the
       honest majority. Decoy ``j`` sends :math:`G + \Delta_{ben} + \delta
       e_{c_j}`: the benign update, with coordinate :math:`c_j` of the
       indicator layer moved by :math:`\delta` = ``decoy_shift``, where
       :math:`c_j` is the ``j``-th coordinate (outside the masks and the
       indicators) with the smallest :math:`|s\Delta_{bd} - \Delta_{ben}|`
       (:func:`decoy_positions`), a parameter the backdoor does not use.
    4. *Indicators.* Attacker ``r`` writes :math:`v` at its indicator
       :math:`I_r` (:func:`indicator_positions`: the ``r``-th coordinate of
       the chosen layer, outside the masks, with the smallest change of the
       global model in the previous round; in the first active round, with
       no earlier global model kept, the first allowed coordinates). A
       backdoor sender sends :math:`G + s \Delta_{bd} + m_r`, a decoy its
       decoy, both with update :math:`v` at :math:`I_r`.

    Slots. A Flower client sends one update per round, so decoys take
    attacker slots (the authors add decoy devices): attackers of rank
    ``0 .. M-k-1`` send the masked backdoor, ranks ``M-k .. M-1`` decoy
    ``j = r - (M - k)``. ``k`` starts at ``decoys`` (the authors: 0) and is
    at most ``M - 1`` and ``max_decoys``.

    In the next active round it reads :math:`f_r = (G_{t+1} - G_t)[I_r] / v`
    for every attacker (:func:`read_indicators`), tunes :math:`\alpha` from
    the backdoor senders' readings (:func:`tune_alpha`) and ``k`` from all
    of them (:func:`tune_decoys`: each accepted decoy removed, one added
    when no backdoor got through and no decoy was accepted; none under weak
    DP). The indicator layer is the last array with two or more dimensions
    before the output layer (the output weight for a one-layer model). Fit
    metrics: ``three_dfed_alpha``, ``three_dfed_decoys`` (``k``),
    ``three_dfed_decoy`` (this attacker sends one), and after a reading
    ``three_dfed_accepted`` (share of the backdoor indicators) and
    ``three_dfed_weak_dp``; the server reports the trigger's
    ``backdoor_accuracy``.

    Simplifications. Colluding without messages: every shared choice (the
    masked neurons, the masks, :math:`\alpha`, ``k``, the indicator
    positions) comes from the run's seed, the round and the global models,
    so every attacker computes the same ones; this holds when all
    configured attackers take part in every round (full participation), as
    the authors' single adversary controlling every device assumes. Each
    attacker trains its own backdoor on its own data (the authors send one
    backdoor update from every device). The masks are the authors'
    initialisation, centred to sum to zero exactly, with the closed-form
    scale of :func:`mask_scale` in place of their 30 steps of Lagrangian
    optimisation. A decoy is the closed form of the authors' decoy
    training (cross-entropy plus a reward for moving :math:`c_j` past the
    threshold :math:`\delta`): the benign model with :math:`c_j` moved by
    exactly :math:`\delta`. The indicator is the smallest last global
    change (the authors: smallest :math:`|\Delta_{bd}| + |\Delta_{ben}|`,
    then smallest curvature) and carries a fixed value :math:`v` (the
    authors: the update times :math:`10^5`), so that every attacker can
    read every indicator. One group of attackers (the authors'
    ``fl_adv_group_size`` splits them).

    Parameters
    ----------
    env : ClientEnv
        The client's environment.
    model : torch.nn.Module, optional
        A model to reuse.
    **params
        The fields of :class:`ThreeDFed`.
    """

    params_type: ClassVar[type] = ThreeDFed
    client_mod: ClassVar[str] = "three_dfed_mod"
    """The Message-API face of the update transform (:func:`clients.mods.three_dfed_mod`)."""

    def __init__(self, env: ClientEnv, model: nn.Module | None = None, **params: Any) -> None:
        super().__init__(env, model)
        self.params = ThreeDFed(**params)
        num_classes = env.dataset.num_classes
        check_classes(self.params, num_classes)
        if self.params.mask_neurons > num_classes - 1:
            raise ValueError(
                f"mask_neurons: got {self.params.mask_neurons}, at most {num_classes - 1} "
                "output neurons are not the target"
            )
        self.trigger = self.params.trigger()
        self.trigger.stamp(env.x[:1])
        attackers = sorted(malicious_ids(env.cfg))
        count = max(1, len(attackers))
        self.params.check_attackers(count)
        pid = env.partition_id
        rank = attackers.index(pid) if pid in attackers else pid % count
        self.colluder = Colluder(rank, count, env.cfg.seed, num_classes)
        self.benign: NDArrays = []
        self.memory: list[np.ndarray] | None = None
        self.round_metrics: dict[str, Scalar] = {}

    def training_data(self, server_round: int) -> tuple[torch.Tensor, torch.Tensor]:
        """While active: the partition with its poisoned part stamped and relabelled."""
        x, y = super().training_data(server_round)
        if not self.active(server_round):
            return x, y
        gen = torch.Generator().manual_seed(client_seed(self.env.cfg, self.partition_id, 0))
        return self.trigger.poison(x, y, gen)

    def train(self, x: torch.Tensor, y: torch.Tensor, server_round: int) -> float:
        """While active: a benign model (kept as weights), then the constrained backdoor."""
        if not self.active(server_round):
            return super().train(x, y, server_round)
        cfg = self.training_config(server_round)
        start = {k: v.clone() for k, v in self.model.state_dict().items()}
        gen = torch.Generator().manual_seed(
            client_seed(self.env.cfg, self.partition_id, server_round) + BatchStream.REPLACEMENT
        )
        train_local(self.model, self.env.x, self.env.y, for_round(cfg, max(1, server_round)), gen)
        self.benign = get_weights(self.model)
        self.model.load_state_dict(start)
        weight = self.params.constraint_weight
        if weight == 0.0:
            return self.train_with(x, y, server_round, cfg)
        reference = [p.detach().clone() for p in self.model.parameters()]
        ano = anomaly_loss("l2", reference)
        ratio = weight / (1.0 - weight)
        constrained = alpha_weighted(cfg, 1.0 - weight)
        return self.train_with(x, y, server_round, constrained, lambda m: ratio * ano(m))

    def _recall(self, server_round: int) -> list[np.ndarray] | None:
        if self.state is not None:
            return self.state.load(MEMORY, server_round, self.checkpoint_dir)
        return self.memory

    def _keep(self, memory: list[np.ndarray], server_round: int) -> None:
        if self.state is not None:
            self.state.save(MEMORY, memory, server_round, self.checkpoint_dir)
        self.memory = memory

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """While active: the masked backdoor or a decoy (:func:`craft_update`); else ``X``."""
        self.round_metrics = {}
        if not self.active(server_round):
            return trained
        memory = self._recall(server_round)
        crafted = craft_update(
            self.params, self.colluder, global_weights, trained, self.benign, memory, server_round
        )
        self._keep(crafted.memory, server_round)
        self.round_metrics = crafted.metrics
        return crafted.weights

    def fit_metrics(self, server_round: int) -> dict[str, Scalar]:
        r"""The attack tags and, while active, :math:`\alpha` and the last reading."""
        return {**super().fit_metrics(server_round), **self.round_metrics}

    @classmethod
    def server_metrics(cls, cfg: ExperimentConfig, dataset: Dataset) -> ServerMetric | None:
        """``backdoor_accuracy`` of the global model on stamped test images."""
        params = ThreeDFed(**cls.attack_params(cfg))
        keep = torch.ones(len(dataset.y_test), dtype=torch.bool)
        if params.source_class is not None:
            keep &= dataset.y_test == params.source_class
        if cfg.evaluation.backdoor_exclude_target:
            keep &= dataset.y_test != params.target_class
        x = params.trigger().stamp(dataset.x_test[keep])
        return backdoor_metric(x, params.target_class, cfg.evaluation.batch_size)
