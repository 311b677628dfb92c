"""FLDetector (Zhang, Cao, Jia & Gong): flag clients whose updates their history cannot predict."""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import row_norms
from strategies._params import check_number, check_positive_int
from strategies.base import RobustStrategy
from strategies.median import coordinate_median

logger = logging.getLogger("flsec")

BASES = ("mean", "median")
"""Rules FLDetector can aggregate the unflagged updates with."""


def lbfgs_product(
    steps: list[torch.Tensor], changes: list[torch.Tensor], v: torch.Tensor
) -> torch.Tensor:
    r"""The L-BFGS approximation :math:`B v` of a Hessian-vector product (compact form).

    With :math:`S = [s_1 \dots s_m]`, :math:`Y = [y_1 \dots y_m]` (model
    differences and gradient differences of past rounds),
    :math:`\sigma = y_m^\top s_m / s_m^\top s_m`, :math:`S^\top Y = L + D + R`
    (strictly lower, diagonal, strictly upper parts),

    .. math::
        B v = \sigma v - [\sigma S \;\; Y]
        \begin{bmatrix} \sigma S^\top S & L \\ L^\top & -D \end{bmatrix}^{-1}
        \begin{bmatrix} \sigma S^\top v \\ Y^\top v \end{bmatrix}

    (Byrd, Nocedal and Schnabel 1994, eq. 2.17; Algorithm 1 of FLDetector).
    :math:`B` satisfies the secant equation :math:`B s_m = y_m`. Computed in
    float64.

    Parameters
    ----------
    steps, changes : list of torch.Tensor
        The pairs :math:`s_k` and :math:`y_k`, oldest first, each of shape ``(d,)``.
    v : torch.Tensor
        Shape ``(d,)``.

    Returns
    -------
    torch.Tensor
        :math:`B v`, float64.

    Examples
    --------
    >>> s, y = [torch.tensor([1.0, 0.0])], [torch.tensor([2.0, 0.0])]
    >>> lbfgs_product(s, y, torch.tensor([1.0, 1.0]))
    tensor([2., 2.], dtype=torch.float64)
    """
    s_mat = torch.stack(steps).to(torch.float64)
    y_mat = torch.stack(changes).to(torch.float64)
    v = v.to(torch.float64)
    sigma = float(y_mat[-1] @ s_mat[-1]) / float(s_mat[-1] @ s_mat[-1])
    sy = s_mat @ y_mat.T
    lower = torch.tril(sy, diagonal=-1)
    middle = torch.cat(
        [
            torch.cat([sigma * (s_mat @ s_mat.T), lower], dim=1),
            torch.cat([lower.T, -torch.diag(sy.diagonal())], dim=1),
        ]
    )
    rhs = torch.cat([sigma * (s_mat @ v), y_mat @ v])
    coef = torch.linalg.solve(middle, rhs)
    m = len(steps)
    product: torch.Tensor = sigma * v - sigma * (coef[:m] @ s_mat) - coef[m:] @ y_mat
    return product


def two_means_1d(values: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Exact 2-means of 1-D values: the mask of the upper cluster and the within sum of squares.

    The optimal clusters of 1-D values are the two sides of a cut of the
    sorted values; every cut is tried (prefix sums). Ties in cost go to the
    lower cut.

    Examples
    --------
    >>> upper, within = two_means_1d(torch.tensor([0.0, 0.1, 1.0, 0.05], dtype=torch.float64))
    >>> upper, round(within, 6)
    (tensor([False, False,  True, False]), 0.005)
    """
    x, order = values.to(torch.float64).sort()
    n = x.numel()
    if n < 2:
        return torch.zeros(n, dtype=torch.bool), 0.0
    k = torch.arange(1, n, dtype=torch.float64)
    left = x.cumsum(0)[:-1]
    total = x.sum()
    explained = left**2 / k + (total - left) ** 2 / (n - k)
    cut = int(torch.argmax(explained)) + 1
    upper = torch.zeros(n, dtype=torch.bool)
    upper[order[cut:]] = True
    within = float((x * x).sum() - explained[cut - 1])
    return upper, max(within, 0.0)


def has_two_clusters(scores: torch.Tensor, generator: torch.Generator, draws: int = 20) -> bool:
    r"""Whether the scores form more than one cluster by the gap statistic.

    Tibshirani, Walther and Hastie, "Estimating the number of clusters in a
    data set via the gap statistic", JRSS B 2001.

    The scores are min-max scaled to :math:`[0, 1]`; :math:`W_k` is the
    within-cluster sum of squares of the best :math:`k`-means (exact in 1-D),
    :math:`W^*_{kb}` the same for ``draws`` uniform samples on :math:`[0, 1]`
    of the same size,
    :math:`\mathrm{Gap}(k) = \overline{\log W^*_{kb}} - \log W_k` and
    :math:`s_k = \mathrm{sd}_b(\log W^*_{kb}) \sqrt{1 + 1/B}`. The chosen
    number of clusters is the smallest :math:`k` with
    :math:`\mathrm{Gap}(k) \ge \mathrm{Gap}(k+1) - s_{k+1}`; it exceeds 1 iff
    :math:`\mathrm{Gap}(1) < \mathrm{Gap}(2) - s_2`, which is what this returns.
    Equal scores form one cluster.
    """
    lo, hi = float(scores.min()), float(scores.max())
    if not hi > lo:
        return False
    x = (scores.to(torch.float64).cpu() - lo) / (hi - lo)
    tiny = 1e-300

    def log_w(sample: torch.Tensor) -> tuple[float, float]:
        w1 = float(((sample - sample.mean()) ** 2).sum())
        w2 = two_means_1d(sample)[1]
        return (
            torch.tensor(max(w1, tiny)).log().item(),
            torch.tensor(max(w2, tiny)).log().item(),
        )

    logs = torch.tensor(
        [
            log_w(torch.rand(x.numel(), generator=generator, dtype=torch.float64))
            for _ in range(draws)
        ]
    )
    data1, data2 = log_w(x)
    gap1 = float(logs[:, 0].mean()) - data1
    gap2 = float(logs[:, 1].mean()) - data2
    s2 = float(logs[:, 1].std(correction=0)) * (1.0 + 1.0 / draws) ** 0.5
    return bool(gap1 < gap2 - s2)


class FLDetector(RobustStrategy):
    r"""FLDetector: predict each client's update from its last one, flag the unpredictable.

    Each round :math:`t`, with the global models :math:`w_t`, the global
    gradients :math:`\bar g_t = -\bar u_t` (the negated aggregates) and the
    L-BFGS product :math:`B` of the last ``window`` pairs
    :math:`(w_k - w_{k-1},\ \bar g_k - \bar g_{k-1})` (:func:`lbfgs_product`),
    a client's update is predicted from its update of round :math:`t - 1`,

    .. math:: \hat u_i^t = u_i^{t-1} - B (w_t - w_{t-1}),

    its distance :math:`\lVert \hat u_i^t - u_i^t \rVert` normalised by the
    sum over the round's predicted clients is stored, and its suspicious
    score is the mean of its last ``window`` normalised distances. Once
    ``window`` pairs exist and at least four clients have a score, the gap
    statistic (:func:`has_two_clusters`) decides whether the scores form
    more than one cluster; if so, 2-means splits them and the clients of the
    higher cluster are flagged if their mean score is at least ``min_ratio``
    times the lower cluster's; they are excluded from then on, and detection
    stops (the paper detects once, then restarts training without them). The
    remaining updates are aggregated by ``base``.

    Zhang, Cao, Jia and Gong, "FLDetector: Defending Federated Learning
    Against Model Poisoning Attacks via Detecting Malicious Clients", KDD
    2022, Algorithm 1 (window :math:`N = 10`). Where the paper restarts
    training without the detected clients, here they are excluded from the
    next aggregations and training goes on. A pair with
    :math:`s^\top y \le 0` (no positive curvature) is not kept, the usual
    L-BFGS safeguard. A client that missed the previous round has no
    prediction that round. ``min_ratio`` is not in the paper (1 reproduces
    it): the gap statistic works on min-max scaled scores, so honest scores
    that differ by a few percent can look like two clusters; 1.5 makes
    such rounds no detection. The per-client history lives in
    :attr:`state_attributes`, so a resumed run continues detection.

    Parameters
    ----------
    window : int
        Rounds :math:`N` of history (L-BFGS pairs and score average); paper: 10.
    base : {"median", "mean"}
        Rule applied to the unflagged updates (the paper pairs FLDetector
        with FedAvg, trimmed mean and median).
    min_ratio : float
        Smallest ratio of the flagged to the unflagged clients' mean score, ``>= 1``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    state_attributes: ClassVar[tuple[str, ...]] = (
        "previous_global",
        "previous_gradient",
        "steps",
        "changes",
        "last_updates",
        "distances",
        "excluded",
    )

    def __init__(
        self, *, window: int = 10, base: str = "median", min_ratio: float = 1.5, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.window = check_positive_int("window", window)
        self.min_ratio = check_number("min_ratio", min_ratio, 1.0)
        if base not in BASES:
            raise ValueError(f"base must be one of {', '.join(BASES)}, got {base!r}")
        self.base = base
        self.previous_global: torch.Tensor | None = None
        self.previous_gradient: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []
        self.changes: list[torch.Tensor] = []
        self.last_updates: dict[int, torch.Tensor] = {}
        self.distances: dict[int, list[float]] = {}
        self.excluded: set[int] = set()

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Score the round's clients, detect, aggregate the rest and update the history."""
        pids = ctx.partition_ids
        self._record_distances(updates, ctx)
        newly = self._detect(pids, ctx.generator)
        if newly:
            logger.warning("round %d: FLDetector flags partitions %s", ctx.server_round, newly)
            self.excluded |= set(newly)
        kept = [i for i, pid in enumerate(pids) if pid not in self.excluded]
        flagged = [i for i, pid in enumerate(pids) if pid in self.excluded]
        if not kept:
            update = torch.zeros_like(updates[0])
        else:
            rows = updates[torch.as_tensor(kept, device=updates.device)]
            update = rows.mean(dim=0) if self.base == "mean" else coordinate_median(rows).update
        self._record_round(updates, ctx, update)
        scores = torch.tensor([self._score(pid) for pid in pids], dtype=torch.float64)
        metrics: dict[str, float] = {"fldetector_excluded": len(self.excluded)}
        return Aggregate(update, selected=kept, flagged=flagged, scores=scores, metrics=metrics)

    def _score(self, pid: int) -> float:
        history = self.distances.get(pid, [])
        return sum(history) / len(history) if history else float("nan")

    def _record_distances(self, updates: torch.Tensor, ctx: RoundContext) -> None:
        if self.previous_global is None or not self.steps:
            return
        known = [i for i, pid in enumerate(ctx.partition_ids) if pid in self.last_updates]
        if not known:
            return
        move = ctx.global_params.to(torch.float64) - self.previous_global.to(torch.float64)
        try:
            hvp = lbfgs_product(self.steps, self.changes, move)
        except torch.linalg.LinAlgError:  # type: ignore[attr-defined]  # exported, not in __all__
            hvp = torch.zeros_like(move)
        if not bool(torch.isfinite(hvp).all()):
            hvp = torch.zeros_like(move)
        hvp = hvp.to(device=updates.device)
        gaps = torch.stack(
            [
                row_norms(
                    self.last_updates[ctx.partition_ids[i]].to(torch.float64)
                    - hvp
                    - updates[i].to(torch.float64)
                )
                for i in known
            ]
        )
        total = float(gaps.sum())
        share = gaps / total if total > 0 else torch.full_like(gaps, 1.0 / len(known))
        for i, value in zip(known, share.tolist(), strict=True):
            pid = ctx.partition_ids[i]
            self.distances[pid] = [*self.distances.get(pid, []), value][-self.window :]

    def _detect(self, pids: list[int], generator: torch.Generator) -> list[int]:
        if self.excluded or len(self.steps) < self.window:
            return []
        scored = [p for p in pids if p not in self.excluded and self.distances.get(p)]
        if len(scored) < 4:
            return []
        scores = torch.tensor([self._score(p) for p in scored], dtype=torch.float64)
        if not has_two_clusters(scores, generator):
            return []
        upper, _ = two_means_1d(scores)
        if float(scores[upper].mean()) < self.min_ratio * float(scores[~upper].mean()):
            return []
        return [p for p, high in zip(scored, upper.tolist(), strict=True) if high]

    def _record_round(self, updates: torch.Tensor, ctx: RoundContext, update: torch.Tensor) -> None:
        gradient = -update.to(torch.float64)
        current = ctx.global_params.to(torch.float64)
        if self.previous_global is not None and self.previous_gradient is not None:
            step = current - self.previous_global
            change = gradient - self.previous_gradient
            if float(step @ change) > 0:
                self.steps = [*self.steps, step.float()][-self.window :]
                self.changes = [*self.changes, change.float()][-self.window :]
        self.previous_global = current.float()
        self.previous_gradient = gradient.float()
        self.last_updates = {
            pid: updates[i].clone()
            for i, pid in enumerate(ctx.partition_ids)
            if pid not in self.excluded
        }
