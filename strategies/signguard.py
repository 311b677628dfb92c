"""SignGuard (Xu, Huang, Song & Lan): norm thresholds and sign-statistics clustering."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import row_norms
from strategies._params import check_number
from strategies.base import RobustStrategy


def sign_features(updates: torch.Tensor, cols: torch.Tensor) -> np.ndarray:
    r"""Per-row shares of positive, zero and negative values on ``cols``, each column max-scaled.

    .. math:: (s_i^+, s_i^0, s_i^-) = \frac{1}{|r|} \big(\#\{k \in r: u_{ik} > 0\},
        \#\{k \in r: u_{ik} = 0\}, \#\{k \in r: u_{ik} < 0\}\big)

    then every feature is divided by its largest value over the rows (a
    feature that is 0 for every row stays 0), as in the authors' code.

    Examples
    --------
    >>> sign_features(torch.tensor([[1.0, -1.0], [1.0, 1.0]]), torch.tensor([0, 1]))
    array([[0.5, 0. , 1. ],
           [1. , 0. , 0. ]])
    """
    sub = updates[:, cols.to(updates.device)]
    counts = torch.stack([(sub > 0).sum(1), (sub == 0).sum(1), (sub < 0).sum(1)], dim=1)
    shares = counts.to(torch.float64).cpu().numpy() / max(1, sub.shape[1])
    top = shares.max(axis=0)
    return shares / np.where(top > 0, top, 1.0)


def largest_meanshift_cluster(features: np.ndarray) -> list[int]:
    """Rows of the largest Mean-Shift cluster of ``features`` (bandwidth: 0.5 quantile).

    Mean-Shift with bin seeding and ``cluster_all=False`` (rows far from
    every mode are left out), bandwidth from scikit-learn's
    ``estimate_bandwidth(quantile=0.5)``. When the features are all equal
    (bandwidth 0) or no cluster forms, every row is returned; ties between
    clusters go to the lower label.

    Examples
    --------
    >>> f = np.array([[0.5, 0, 1], [0.52, 0, 0.98], [0.49, 0, 1], [1, 0, 0.1]])
    >>> largest_meanshift_cluster(f)
    [0, 1, 2]
    """
    from sklearn.cluster import (  # lazy: scikit-learn costs seconds at import
        MeanShift,
        estimate_bandwidth,
    )

    n = features.shape[0]
    bandwidth = estimate_bandwidth(features, quantile=0.5, random_state=0) if n > 1 else 0.0
    if not bandwidth > 0:
        return list(range(n))
    labels = MeanShift(bandwidth=bandwidth, bin_seeding=True, cluster_all=False).fit(features)
    found = labels.labels_[labels.labels_ >= 0]
    if found.size == 0:
        return list(range(n))
    return [int(i) for i in np.flatnonzero(labels.labels_ == np.bincount(found).argmax())]


def signguard(
    updates: torch.Tensor,
    generator: torch.Generator,
    lower: float = 0.1,
    upper: float = 3.0,
    coordinate_fraction: float = 0.1,
) -> Aggregate:
    r"""SignGuard: rows passing both filters, clipped to the median norm, averaged.

    1. norm filter: :math:`S_1 = \{i : L \le \lVert u_i \rVert / M \le R\}` with
       :math:`M = \mathrm{median}_j \lVert u_j \rVert`;
    2. sign filter: on a random subset :math:`r` of coordinates (a
       ``coordinate_fraction`` of them, at least one), the sign statistics of
       every row (:func:`sign_features`) are clustered by Mean-Shift and
       :math:`S_2` is the largest cluster (:func:`largest_meanshift_cluster`);
    3. :math:`g = \frac{1}{|S|} \sum_{i \in S} u_i \min(1, M / \lVert u_i \rVert)`,
       :math:`S = S_1 \cap S_2`.

    Xu, Huang, Song and Lan, "Byzantine-robust Federated Learning through
    Collaborative Malicious Gradient Filtering" (SignGuard), ICDCS 2022,
    Algorithm 1 with the paper's :math:`L = 0.1`, :math:`R = 3` and 10% of the
    coordinates. A zero row is never clipped; when :math:`S` is empty the
    aggregate is zero (the global model is kept).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    generator : torch.Generator
        CPU generator of the coordinate subset.
    lower, upper : float
        Norm-ratio bounds :math:`L` and :math:`R`.
    coordinate_fraction : float
        Share of the coordinates whose signs are counted, in (0, 1].

    Returns
    -------
    Aggregate
        The clipped mean of :math:`S` (``selected``); the other rows
        ``flagged``; ``scores`` are the norm ratios :math:`\lVert u_i \rVert / M`.

    Examples
    --------
    >>> u = torch.tensor([[1.0, 1.0], [1.2, 0.8], [0.8, 1.2], [-9.0, -9.0]])
    >>> agg = signguard(u, torch.Generator().manual_seed(0), coordinate_fraction=1.0)
    >>> agg.update, agg.selected, agg.flagged
    (tensor([1., 1.]), [0, 1, 2], [3])
    """
    n, d = updates.shape
    norms = row_norms(updates)
    median = float(norms.quantile(0.5))
    ratio = norms / median if median > 0 else torch.where(norms > 0, torch.inf, 1.0)
    by_norm = (ratio >= lower) & (ratio <= upper)
    size = max(1, int(coordinate_fraction * d))
    cols = torch.randperm(d, generator=generator)[:size].sort().values
    by_sign = torch.zeros(n, dtype=torch.bool)
    by_sign[largest_meanshift_cluster(sign_features(updates, cols))] = True
    keep = by_norm.cpu() & by_sign
    selected = keep.nonzero().flatten().tolist()
    flagged = (~keep).nonzero().flatten().tolist()
    if not selected:
        return Aggregate(torch.zeros_like(updates[0]), selected=[], flagged=flagged, scores=ratio)
    scale = torch.where(norms > median, median / norms, 1.0)
    weights = torch.where(keep.to(norms.device), scale, 0.0) / len(selected)
    update = weights.to(updates.dtype) @ updates
    return Aggregate(update=update, selected=selected, flagged=flagged, scores=ratio)


class SignGuard(RobustStrategy):
    """SignGuard (:func:`signguard`), the coordinate subset drawn with ``ctx.generator``.

    Parameters
    ----------
    lower : float
        Lower norm-ratio bound ``L`` (paper: 0.1).
    upper : float
        Upper norm-ratio bound ``R`` (paper: 3.0).
    coordinate_fraction : float
        Share of coordinates whose signs are counted, in (0, 1] (paper: 0.1).
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(
        self,
        *,
        lower: float = 0.1,
        upper: float = 3.0,
        coordinate_fraction: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.lower = check_number("lower", lower, 0.0, 1.0)
        self.upper = check_number("upper", upper, 1.0)
        self.coordinate_fraction = check_number("coordinate_fraction", coordinate_fraction, 0, 1)
        if self.coordinate_fraction == 0:
            raise ValueError("coordinate_fraction must be in (0, 1], got 0")

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Filter by norm and sign statistics, clip to the median norm, average."""
        return signguard(updates, ctx.generator, self.lower, self.upper, self.coordinate_fraction)
