"""3DFed: a constrained backdoor, zero-sum noise masks, indicators read from the next model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from flwr.common import Config, NDArrays, Scalar
from torch import nn

from clients.attack import AttackClient, check_classes
from clients.model_poisoning import check_number
from clients.model_replacement import alpha_weighted, anomaly_loss
from clients.pixel_trojan import PixelTrigger, backdoor_metric
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
"""Fit-metrics key: the share of last round's indicators read as accepted."""

WEAK_DP = "three_dfed_weak_dp"
"""Fit-metrics key: whether last round's feedback showed server noise (tuning disabled)."""


def flatten(arrays: NDArrays) -> np.ndarray:
    """All arrays as one float64 vector."""
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in arrays])


def unflatten(vector: np.ndarray, like: NDArrays) -> NDArrays:
    """``vector`` cut into the shapes and dtypes of ``like`` (integers rounded)."""
    out, start = [], 0
    for a in like:
        a = np.asarray(a)
        part = vector[start : start + a.size].reshape(a.shape)
        start += a.size
        out.append((np.rint(part) if np.issubdtype(a.dtype, np.integer) else part).astype(a.dtype))
    return out


def output_layer(weights: NDArrays, num_classes: int) -> tuple[int, int | None]:
    """Indices of the output layer's weight (the last ``(C, h)`` array) and bias (``(C,)``, next).

    Examples
    --------
    >>> output_layer([np.zeros((4, 3)), np.zeros(4), np.zeros((2, 4)), np.zeros(2)], 2)
    (2, 3)
    """
    for i in range(len(weights) - 1, -1, -1):
        shape = np.shape(weights[i])
        if len(shape) == 2 and shape[0] == num_classes:
            has_bias = i + 1 < len(weights) and np.shape(weights[i + 1]) == (num_classes,)
            return i, (i + 1 if has_bias else None)
    raise ValueError(
        f"model: 3DFed's noise masks need an output layer of shape ({num_classes}, h); "
        f"the weights have shapes {[np.shape(w) for w in weights]}"
    )


def mask_support(
    weights: NDArrays, num_classes: int, neurons: list[int] | np.ndarray
) -> list[np.ndarray]:
    """Boolean masks selecting the output layer's rows (weights and bias) of ``neurons``.

    Examples
    --------
    >>> [m.astype(int).tolist() for m in mask_support([np.zeros((3, 2)), np.zeros(3)], 3, [1])]
    [[[0, 0], [1, 1], [0, 0]], [0, 1, 0]]
    """
    out, bias = output_layer(weights, num_classes)
    support = [np.zeros(np.shape(w), dtype=bool) for w in weights]
    for i in (out, bias):
        if i is not None:
            support[i][np.asarray(neurons, dtype=int)] = True
    return support


def zero_sum_masks(size: int, count: int, scale: float, rng: np.random.Generator) -> np.ndarray:
    r"""``count`` noise masks of ``size`` coordinates that sum to zero, shape ``(count, size)``.

    :math:`m_r = s\,(z_r - \bar z)` with :math:`z_r \sim \mathcal N(0, I)`,
    :math:`\bar z = \frac1M \sum_r z_r` and :math:`s` = ``scale``: the
    authors' initialisation, centred so that :math:`\sum_r m_r = 0` holds
    exactly (their Lagrangian constraint). The coordinates are those of
    the support (:func:`mask_support`).

    Examples
    --------
    >>> masks = zero_sum_masks(2, 3, 1.0, np.random.default_rng(0))
    >>> masks.shape, bool(np.abs(masks.sum(axis=0)).max() < 1e-12)
    ((3, 2), True)
    """
    z = rng.standard_normal((count, size))
    masks: np.ndarray = scale * (z - z.mean(axis=0))
    return masks


def mask_scale(alpha: float, std: float) -> float:
    r"""The masks' scale :math:`s = \sigma \sqrt{\alpha / (1 - \alpha)}`.

    The minimiser over :math:`s` of :math:`\alpha\, c/s + (1-\alpha)\, c\, s /
    \sigma^2`, the authors' trade-off between the output neurons' update
    energy (:math:`1/UP`, weight :math:`\alpha`) and the masks' norm: a
    larger :math:`\alpha` gives larger masks.

    Examples
    --------
    >>> mask_scale(0.5, 0.05), round(mask_scale(0.8, 0.05), 6)
    (0.05, 0.1)
    """
    return std * math.sqrt(alpha / (1.0 - alpha))


def indicator_positions(change: np.ndarray, excluded: np.ndarray, count: int) -> np.ndarray:
    r"""Flat indices into ``change`` of ``count`` indicators, attacker ``r`` taking the ``r``-th.

    The coordinates outside ``excluded`` with the smallest :math:`|\Delta_j|`
    (ties by position, non-finite as largest), in that order.

    Examples
    --------
    >>> change = np.array([0.3, 0.1, 0.0, 0.2])
    >>> indicator_positions(change, np.array([False, False, True, False]), 2).tolist()
    [1, 3]
    """
    values = np.abs(np.asarray(change, np.float64)).ravel()
    keep = ~np.asarray(excluded, bool).ravel()
    values = np.where(np.isfinite(values), values, np.inf)
    if count > int(keep.sum()):
        raise ValueError(
            f"mask_neurons: {count} indicators need {count} coordinates of the indicator "
            f"layer outside the noise masks; {int(keep.sum())} are left"
        )
    return np.lexsort((values, ~keep))[:count]


def read_indicators(feedback: np.ndarray, threshold: float) -> tuple[list[str], bool]:
    r"""The authors' reading of the indicator feedback :math:`f_r = \Delta G[I_r] / v_r`.

    :math:`f_r > 1` or :math:`f_r < -\tau` for any ``r`` means the server
    adds noise (weak DP): nothing is read. Otherwise each indicator is
    ``"r"`` (rejected, :math:`f_r \le \tau`), ``"c"`` (clipped,
    :math:`f_r \le 0.8 \max_s f_s`) or ``"a"`` (accepted).

    Examples
    --------
    >>> read_indicators(np.array([0.1, 0.05, 0.0]), 1e-4)
    (['a', 'c', 'r'], False)
    >>> read_indicators(np.array([0.1, 3.0]), 1e-4)
    ([], True)
    """
    if bool(np.any(feedback > 1.0) or np.any(feedback < -threshold)):
        return [], True
    top = float(np.max(feedback)) if feedback.size else 0.0
    return [
        "r" if f <= threshold else "c" if f <= 0.8 * top else "a" for f in feedback.tolist()
    ], False


def tune_alpha(
    alpha: float, accept: list[str], weak_dp: bool, floor: float, rng: np.random.Generator
) -> float:
    r"""The authors' adaptive tuning of :math:`\alpha` for one group of attackers.

    Weak DP: :math:`\alpha` = ``floor``. At least 80% of the indicators
    accepted: :math:`\alpha` is kept. Otherwise a new :math:`\alpha \sim
    U(\mathrm{floor}, 1)`. The result is clipped to :math:`[0.01, 0.99]`.

    Examples
    --------
    >>> tune_alpha(0.3, ["a", "a", "c", "a", "a"], False, 0.0, np.random.default_rng(0))
    0.3
    >>> tune_alpha(0.3, [], True, 0.0, np.random.default_rng(0))
    0.01
    """
    if weak_dp:
        alpha = floor
    elif accept.count("a") < 0.8 * len(accept):
        alpha = float(rng.uniform(floor, 1.0))
    return min(max(alpha, 0.01), 0.99)


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

    def trigger(self) -> PixelTrigger:
        """The data poisoning."""
        names = ("target_class", "pattern", "trigger_size", "offset", "mask", "value")
        fields = {k: getattr(self, k) for k in (*names, "source_class", "poison_fraction")}
        return PixelTrigger(**fields)


class ThreeDFedClient(AttackClient):
    r"""3DFed (Li, Pang, Wu, Sun, Wang & Zhou, IEEE S&P 2023), without decoy models.

    Li et al., "3DFed: Adaptive and Extensible Framework for Covert Backdoor
    Attack in Federated Learning", IEEE S&P 2023, as their code
    (``haoyangliASTAPLE/3DFed``) runs it. In every active round each of the
    ``M`` attackers (rank ``r`` among the configured attackers), from the
    global model ``G``:

    1. *Constrained backdoor.* It trains a benign model (its clean data,
       :math:`\Delta_{ben}`) and a backdoored one on its data with the pixel
       trigger, minimising :math:`(1-\lambda_c) L_{CE} + \lambda_c \lVert
       \theta - G \rVert_2` (:math:`\Delta_{bd}`), and scales it up towards
       the benign norm: :math:`s = \max(1, \min(\lVert\Delta_{ben}\rVert /
       \lVert\Delta_{bd}\rVert, \mathrm{max\_scale}))`.
    2. *Noise masks.* ``mask_neurons`` output neurons other than the target
       are drawn; the masks :math:`m_1 .. m_M` live on their rows of the
       output layer and sum to zero (:func:`zero_sum_masks`, scale
       :func:`mask_scale` of :math:`\alpha`), so the aggregate is unchanged
       while each attacker's update looks different (the authors also aim
       to raise the non-target neurons' update energy, which DeepSight
       inspects).
    3. *Indicators.* Attacker ``r`` writes :math:`v` at its indicator
       :math:`I_r` (:func:`indicator_positions`: the ``r``-th coordinate of
       the chosen layer, outside the masks, with the smallest change of the
       global model in the previous round; in the first active round, with
       no earlier global model kept, the first allowed coordinates). It sends :math:`G + s
       \Delta_{bd} + m_r`, with update :math:`v` at :math:`I_r`.

    In the next active round it reads :math:`f_r = (G_{t+1} - G_t)[I_r] / v`
    for every attacker (:func:`read_indicators`) and tunes :math:`\alpha`
    (:func:`tune_alpha`). The indicator layer is the last array with two or
    more dimensions before the output layer (the output weight for a
    one-layer model). Fit metrics: ``three_dfed_alpha``, and after a
    reading ``three_dfed_accepted`` and ``three_dfed_weak_dp``; the server
    reports the trigger's ``backdoor_accuracy``.

    Simplifications. Colluding without messages: every shared choice (the
    masked neurons, the masks, :math:`\alpha`, the indicator positions)
    comes from the run's seed, the round and the global models, so every
    attacker computes the same ones; this holds when all configured
    attackers take part in every round (full participation), as the
    authors' single adversary controlling every device assumes. Each
    attacker trains its own backdoor on its own data (the authors send one
    backdoor update from every device). The masks are the authors'
    initialisation, centred to sum to zero exactly, with the closed-form
    scale of :func:`mask_scale` in place of their 30 steps of Lagrangian
    optimisation. The indicator is the smallest last global change (the
    authors: smallest :math:`|\Delta_{bd}| + |\Delta_{ben}|`, then smallest
    curvature) and carries a fixed value :math:`v` (the authors: the update
    times :math:`10^5`), so that every attacker can read every indicator.
    One group of attackers (the authors' ``fl_adv_group_size`` splits them).
    Left out: decoy models (extra devices that send benign-looking models
    to absorb a detector's suspicion, and their count tuned from their
    indicators).

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
        self.count = max(1, len(attackers))
        pid = env.partition_id
        self.rank = attackers.index(pid) if pid in attackers else pid % self.count
        self.global_weights: NDArrays = []
        self.benign: NDArrays = []
        self.memory: list[np.ndarray] | None = None
        self.round_metrics: dict[str, Scalar] = {}

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, dict[str, Scalar]]:
        """Remember ``parameters`` as this round's global model, then fit."""
        self.global_weights = [np.array(a) for a in parameters]
        return super().fit(parameters, config)

    def shared_rng(self, server_round: int, purpose: int) -> np.random.Generator:
        """The stream every attacker draws the same shared choices of a round from."""
        return numpy_rng(self.env.cfg.seed, Stream.THREE_DFED, server_round, purpose)

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

    def last_round(
        self, global_weights: NDArrays, server_round: int
    ) -> tuple[np.ndarray, float, np.ndarray] | None:
        """Last round's indicators, alpha and flat global model; ``None`` unless kept then."""
        memory = self._recall(server_round)
        if memory is None or int(memory[0][0]) != server_round - 1:
            return None
        previous = memory[3:]
        if [p.shape for p in previous] != [np.shape(g) for g in global_weights]:
            return None
        return memory[1].astype(np.int64), float(memory[2][0]), flatten(previous)

    def tuned_alpha(
        self,
        global_flat: np.ndarray,
        last: tuple[np.ndarray, float, np.ndarray] | None,
        server_round: int,
    ) -> float:
        r""":math:`\alpha` of this round: tuned from last round's indicators, else drawn."""
        rng = self.shared_rng(server_round, 0)
        floor = self.params.mask_alpha
        if last is None:
            return min(max(float(rng.uniform(floor, 1.0)), 0.01), 0.99)
        positions, alpha, previous = last
        feedback = (global_flat - previous)[positions] / self.params.indicator_value
        accept, weak_dp = read_indicators(feedback, self.params.reject_threshold)
        self.round_metrics[WEAK_DP] = weak_dp
        if not weak_dp:
            self.round_metrics[ACCEPTED] = accept.count("a") / len(accept)
        return tune_alpha(alpha, accept, weak_dp, floor, rng)

    def craft(self, global_weights: NDArrays, trained: NDArrays, server_round: int) -> NDArrays:
        """While active: ``G + s (X - G) + m_r`` with update ``v`` at ``I_r``; else ``X``."""
        self.round_metrics = {}
        if not self.active(server_round):
            return trained
        p = self.params
        num_classes = self.env.dataset.num_classes
        g = flatten(global_weights)
        last = self.last_round(global_weights, server_round)
        alpha = self.tuned_alpha(g, last, server_round)
        self.round_metrics[ALPHA] = alpha
        update = flatten(trained) - g
        norm = float(np.linalg.norm(update))
        scale = 1.0
        if 0.0 < norm < math.inf:
            benign = float(np.linalg.norm(flatten(self.benign) - g))
            scale = max(1.0, min(benign / norm, p.max_scale))
        others = [c for c in range(num_classes) if c != p.target_class]
        neurons = self.shared_rng(server_round, 1).permutation(others)[: p.mask_neurons]
        support = mask_support(global_weights, num_classes, neurons)
        flat_support = np.concatenate([m.ravel() for m in support])
        masks = zero_sum_masks(
            int(flat_support.sum()),
            self.count,
            mask_scale(alpha, p.mask_std),
            self.shared_rng(server_round, 2),
        )
        out, _ = output_layer(global_weights, num_classes)
        layer = max((i for i in range(out) if np.ndim(global_weights[i]) >= 2), default=out)
        start = sum(np.size(w) for w in global_weights[:layer])
        stop = start + np.size(global_weights[layer])
        change = g[start:stop] - (g if last is None else last[2])[start:stop]
        positions = start + indicator_positions(change, support[layer], self.count)
        sent = g + scale * update
        sent[flat_support] += masks[self.rank]
        own = positions[self.rank]
        sent[own] = g[own] + p.indicator_value
        self._keep(
            [np.array([server_round]), positions, np.array([alpha]), *global_weights],
            server_round,
        )
        return unflatten(sent, global_weights)

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
