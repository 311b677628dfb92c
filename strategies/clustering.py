"""Cosine clustering (Sattler et al.): two clusters by average linkage, keep the larger."""

from __future__ import annotations

import numpy as np
import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies.base import RobustStrategy
from strategies.flame import model_cosine_distances


def larger_of_two_clusters(distances: np.ndarray) -> list[int]:
    """Rows of the larger of two average-linkage clusters of a precomputed distance matrix.

    When the two clusters have the same size there is no majority and every
    row is kept (a choice that does not depend on the row order); so it is
    with fewer than two rows.

    Examples
    --------
    >>> d = np.array([[0, .1, .1, .9], [.1, 0, .1, .9], [.1, .1, 0, .9], [.9, .9, .9, 0]])
    >>> larger_of_two_clusters(d)
    [0, 1, 2]
    """
    from sklearn.cluster import AgglomerativeClustering  # lazy: seconds at import

    n = distances.shape[0]
    if n < 2:
        return list(range(n))
    labels = AgglomerativeClustering(
        n_clusters=2, metric="precomputed", linkage="average"
    ).fit_predict(distances)
    sizes = np.bincount(labels, minlength=2)
    if sizes[0] == sizes[1]:
        return list(range(n))
    return [int(i) for i in np.flatnonzero(labels == int(sizes.argmax()))]


def cosine_clustering(updates: torch.Tensor) -> Aggregate:
    r"""Mean of the larger of two clusters of the updates by cosine distance.

    With :math:`c_{ij} = 1 - \cos(u_i, u_j)` (a zero update is at distance 1
    from every non-zero one, see
    :func:`~strategies.flame.model_cosine_distances`), agglomerative
    clustering with average linkage splits the rows into two clusters
    (:func:`larger_of_two_clusters`); the aggregate is the mean of the larger,

    .. math:: g = \frac{1}{|C|} \sum_{i \in C} u_i .

    Sattler, Müller, Wiegand and Samek, "On the Byzantine Robustness of
    Clustered Federated Learning", ICASSP 2020 (the "Clustering" rule of
    the Blades benchmark). Meant for a minority of attackers whose updates
    point elsewhere than the honest ones.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.

    Returns
    -------
    Aggregate
        The mean of the larger cluster (``selected``); the smaller is ``flagged``.

    Examples
    --------
    >>> u = torch.tensor([[1.0, 0.1], [1.0, -0.1], [1.0, 0.0], [-5.0, 0.0]])
    >>> agg = cosine_clustering(u)
    >>> agg.update, agg.selected, agg.flagged
    (tensor([1., 0.]), [0, 1, 2], [3])
    """
    n = updates.shape[0]
    distances = model_cosine_distances(updates, torch.zeros_like(updates[0]))
    selected = larger_of_two_clusters(distances)
    flagged = sorted(set(range(n)) - set(selected))
    index = torch.as_tensor(selected, device=updates.device)
    return Aggregate(updates[index].mean(dim=0), selected=selected, flagged=flagged)


class CosineClustering(RobustStrategy):
    """Cosine clustering (:func:`cosine_clustering`): no parameters.

    Parameters
    ----------
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the mean of the larger cosine cluster."""
        return cosine_clustering(updates)
