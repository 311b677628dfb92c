"""FLAME (Nguyen et al.): HDBSCAN on cosine distances, median-norm clipping, adaptive noise."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import inner_products, row_norms, symmetrize
from strategies.base import RobustStrategy

_BLOCK_ELEMENTS = 1 << 24


def model_cosine_distances(updates: torch.Tensor, global_params: torch.Tensor) -> np.ndarray:
    r"""Pairwise cosine distances of the local models :math:`W_i = G + u_i`.

    .. math:: c_{ij} = 1 - \frac{\langle W_i, W_j \rangle}{\lVert W_i \rVert \lVert W_j \rVert}

    From one Gram product: :math:`\langle W_i, W_j\rangle = \langle u_i, u_j\rangle
    + \langle u_i, G\rangle + \langle u_j, G\rangle + \lVert G\rVert^2`, in float64.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    global_params : torch.Tensor
        Global model :math:`G`, shape ``(d,)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, n)``, float64, values in ``[0, 2]``, exactly symmetric
        with a zero diagonal (HDBSCAN rejects anything else).

    Notes
    -----
    The cosine of a zero vector is undefined; here a zero model
    :math:`W_i = 0` (an update :math:`u_i = -G`) has cosine 0, i.e. distance
    1, to every non-zero model (orthogonal to all: it is in no direction's
    cluster) and distance 0 to another zero model (they are the same point).

    Examples
    --------
    >>> u = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> model_cosine_distances(u, torch.zeros(2))
    array([[0., 1.],
           [1., 0.]])
    >>> model_cosine_distances(torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), torch.zeros(2))
    array([[0., 0., 1.],
           [0., 0., 1.],
           [1., 1., 0.]])
    """
    n, d = updates.shape
    g = global_params.to(device=updates.device, dtype=torch.float64)
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))
    ug = torch.zeros(n, dtype=torch.float64, device=updates.device)
    for start in range(0, d, step):
        ug += updates[:, start : start + step].to(torch.float64) @ g[start : start + step]
    models = symmetrize(inner_products(updates) + ug[:, None] + ug[None, :] + g @ g)
    norms = models.diagonal().clamp(min=0.0).sqrt()
    zero = norms == 0
    safe = torch.where(zero, 1.0, norms)
    cosine = models / (safe[:, None] * safe[None, :])
    cosine = torch.where(zero[:, None] | zero[None, :], 0.0, cosine)
    cosine = torch.where(zero[:, None] & zero[None, :], 1.0, cosine)
    dist = symmetrize((1.0 - cosine).clamp(0.0, 2.0)).fill_diagonal_(0.0)
    return dist.cpu().numpy()


def majority_cluster(distances: np.ndarray) -> list[int]:
    """Rows of the largest HDBSCAN cluster (``min_cluster_size = n // 2 + 1``).

    HDBSCAN with precomputed distances, ``min_samples = 1`` and a single
    cluster allowed, as in FLAME. When HDBSCAN labels every row as noise,
    every row is kept (there is no majority to trust more than the rest).

    Parameters
    ----------
    distances : numpy.ndarray
        Symmetric distance matrix, shape ``(n, n)``.

    Returns
    -------
    list of int
        The admitted rows, ascending.

    Examples
    --------
    >>> d = np.array([[0, .1, .1, .9], [.1, 0, .1, .9], [.1, .1, 0, .9], [.9, .9, .9, 0]])
    >>> majority_cluster(d)
    [0, 1, 2]
    """
    from sklearn.cluster import HDBSCAN  # ~1 s to import: only when FLAME clusters

    n = distances.shape[0]
    if n < 2:
        return list(range(n))
    labels = HDBSCAN(
        min_cluster_size=n // 2 + 1,
        min_samples=1,
        metric="precomputed",
        allow_single_cluster=True,
        copy=True,
    ).fit_predict(distances)
    clusters = labels[labels >= 0]
    if clusters.size == 0:
        return list(range(n))
    biggest = np.bincount(clusters).argmax()
    return [int(i) for i in np.flatnonzero(labels == biggest)]


def flame(
    updates: torch.Tensor,
    global_params: torch.Tensor,
    generator: torch.Generator,
    noise_lambda: float = 0.001,
) -> Aggregate:
    r"""FLAME: admit the majority cluster, clip to the median norm, add adaptive noise.

    1. :math:`c_{ij}` = cosine distance of the local models (:func:`model_cosine_distances`);
       HDBSCAN keeps the majority cluster :math:`L` (:func:`majority_cluster`);
    2. :math:`e_i = \lVert u_i \rVert`, :math:`S = \mathrm{median}(e_1, \dots, e_n)`
       over all clients;
    3. :math:`g = \frac{1}{|L|} \sum_{l \in L} u_l \min(1, S / e_l)`;
    4. :math:`g \leftarrow g + \mathcal N(0, (\lambda S)^2 I)`.

    Nguyen, Rieger, Chen, Yalame, Möllering, Fereidooni, Marchal, Miettinen,
    Mirhoseini, Zeitouni, Koushanfar, Sadeghi and Schneider, "FLAME: Taming
    Backdoors in Federated Learning", USENIX Security 2022, Algorithm 1. The
    paper adds the noise to the new global model; here it is added to the
    aggregated update, which is the same with ``server_lr = 1``.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    global_params : torch.Tensor
        Global model, shape ``(d,)`` (the clustering is on the local models).
    generator : torch.Generator
        CPU generator of the noise.
    noise_lambda : float
        Noise level factor :math:`\lambda` (paper: 0.001 for image classification).

    Returns
    -------
    Aggregate
        The noised mean of the clipped admitted updates; admitted rows
        selected, the others flagged; ``scores`` are the norms :math:`e_i`.

    Examples
    --------
    >>> u = torch.tensor([[1.0, 0.5], [1.0, -0.5], [1.0, 0.0], [-5.0, 0.0]])
    >>> agg = flame(u, torch.zeros(2), torch.Generator().manual_seed(0), noise_lambda=0.0)
    >>> agg.update, agg.selected, agg.flagged
    (tensor([1., 0.]), [0, 1, 2], [3])
    """
    n = updates.shape[0]
    admitted = majority_cluster(model_cosine_distances(updates, global_params))
    norms = row_norms(updates)
    clip = float(norms.quantile(0.5))
    weights = torch.zeros(n, dtype=torch.float64, device=updates.device)
    index = torch.as_tensor(admitted, device=updates.device)
    weights[index] = clip / norms[index].clamp(min=clip) / len(admitted)
    weights = torch.nan_to_num(weights, nan=1.0 / len(admitted))
    update = weights.to(updates.dtype) @ updates
    noise = torch.randn(update.shape, generator=generator, dtype=torch.float32)
    update = update + (noise_lambda * clip * noise).to(device=update.device, dtype=update.dtype)
    flagged = sorted(set(range(n)) - set(admitted))
    return Aggregate(update=update, selected=admitted, flagged=flagged, scores=norms)


class Flame(RobustStrategy):
    """FLAME (:func:`flame`), noise seeded with ``ctx.generator``.

    Parameters
    ----------
    noise_lambda : float
        Noise level factor lambda, ``>= 0``; 0.001 is the paper's
        setting for image classification.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(self, *, noise_lambda: float = 0.001, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(noise_lambda, bool) or not isinstance(noise_lambda, (int, float)):
            raise ValueError(f"noise_lambda must be a number, got {noise_lambda!r}")
        if not (math.isfinite(noise_lambda) and noise_lambda >= 0):
            raise ValueError(f"noise_lambda must be non-negative and finite, got {noise_lambda!r}")
        self.noise_lambda = float(noise_lambda)

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Cluster, clip and noise the round's updates."""
        return flame(updates, ctx.global_params, ctx.generator, self.noise_lambda)
