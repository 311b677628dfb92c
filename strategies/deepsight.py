"""DeepSight (Rieger, Nguyen, Miettinen & Sadeghi): cluster the models, drop suspicious clusters."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from flsec_flower.params import ParamLayout
from strategies._linalg import row_norms
from strategies._params import check_number, check_positive_int
from strategies.base import RobustStrategy

Evaluate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[float, float]]
"""``evaluate(model_flat, x, y) -> (mean cross-entropy loss, error rate)``."""

LOG_RATIO_BOUND = 50.0
"""Log-ratios of DDifs are clipped to ``[-50, 50]``: a wrecked model's DDif stays finite."""


def output_neurons(layout: ParamLayout | None, d: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Flat indices of the output layer, one row per output neuron, and of its biases.

    The output layer is the last array of the layout with two or more
    dimensions, shape ``(P, ...)``, with its bias when the array right after
    it has shape ``(P,)``; neuron ``k`` owns row ``k`` of the weight and bias
    ``k``. A layout without such an array (or none at all) makes every entry
    of the last array (of the whole vector) one neuron with one weight and
    that weight as its bias.

    Returns
    -------
    neurons : numpy.ndarray
        Shape ``(P, m)``: the flat indices of the ``m`` parameters of each neuron.
    biases : numpy.ndarray or None
        Shape ``(P,)``: the flat index of each neuron's bias.

    Examples
    --------
    >>> layout = ParamLayout(((3, 2), (2, 3), (2,)), (np.dtype("float32"),) * 3)
    >>> neurons, biases = output_neurons(layout, 14)
    >>> neurons.tolist(), biases.tolist()
    ([[6, 7, 8, 12], [9, 10, 11, 13]], [12, 13])
    """
    if layout is None:
        index = np.arange(d)
        return index[:, None], index
    starts = np.cumsum([0, *layout.sizes])
    for a in reversed(range(len(layout.shapes))):
        shape = layout.shapes[a]
        if len(shape) >= 2:
            p = shape[0]
            weights = np.arange(starts[a], starts[a + 1]).reshape(p, -1)
            after = a + 1 < len(layout.shapes) and layout.shapes[a + 1] == (p,)
            if not after:
                return weights, None
            biases = np.arange(starts[a + 1], starts[a + 2])
            return np.concatenate([weights, biases[:, None]], axis=1), biases
    last = np.arange(starts[-2], starts[-1])
    return last[:, None], last


def neups(updates: torch.Tensor, neurons: np.ndarray) -> torch.Tensor:
    r"""Normalized update energies (NEUPs) of the output neurons.

    .. math:: \varepsilon_{i,k} = \sum_{j \in k} |u_{ij}|, \qquad
        c_{i,k} = \frac{\varepsilon_{i,k}^2}{\sum_{k'} \varepsilon_{i,k'}^2}

    (DeepSight, Section 4.2; a row whose output layer did not move has all
    NEUPs 0). Computed in float64.

    Examples
    --------
    >>> neups(torch.tensor([[1.0, -1.0, 0.0]]), np.array([[0, 1], [2, 2]]))
    tensor([[1., 0.]], dtype=torch.float64)
    """
    index = torch.as_tensor(neurons, device=updates.device)
    energy = updates.to(torch.float64)[:, index].abs().sum(dim=2)
    squared = energy / energy.amax(dim=1, keepdim=True).clamp_min(1e-300)
    squared = squared * squared
    total = squared.sum(dim=1, keepdim=True)
    return torch.where(total > 0, squared / total.clamp_min(1e-300), 0.0).cpu()


def threshold_exceedings(neup: torch.Tensor) -> torch.Tensor:
    r"""Per row, the number of positive NEUPs of at least :math:`\xi_i = \max(0.01, 1/P) c_i^{max}`.

    A backdoored model trained on few labels has few large NEUPs, hence few
    threshold exceedings (DeepSight, Section 4.3). The paper counts NEUPs
    above :math:`\xi_i`; counting those equal to it too differs only on ties
    and keeps one exceeding for a one-neuron output (:math:`\xi_i = c_{i,1}`).
    A still output layer (all NEUPs 0) has none.

    Examples
    --------
    >>> threshold_exceedings(torch.tensor([[0.5, 0.5, 0.0], [0.9, 0.05, 0.05]]))
    tensor([2, 1])
    """
    xi = max(0.01, 1.0 / neup.shape[1]) * neup.amax(dim=1, keepdim=True)
    return ((neup >= xi) & (neup > 0)).sum(dim=1)


def ddifs(
    evaluate: Evaluate,
    global_params: torch.Tensor,
    updates: torch.Tensor,
    inputs: torch.Tensor,
    num_classes: int,
) -> torch.Tensor:
    r"""Division differences (DDifs) of every model on random inputs, one per output label.

    .. math:: \mathrm{DDif}_{i,k} = \exp\Big(\frac{1}{N} \sum_{m} \log
        \frac{p_k(x_m; G + u_i)}{p_k(x_m; G)}\Big)
        = \exp\big(L_k(G) - L_k(G + u_i)\big)

    with :math:`L_k(w)` the mean cross-entropy of model :math:`w` on the
    inputs all labelled :math:`k`, so only the server's
    ``evaluate(model, x, y) -> (loss, error)`` is needed. DeepSight averages
    the ratios arithmetically; this is their geometric mean. The log-ratio
    is clipped to ``[-50, 50]`` and a non-finite loss counts as infinite.

    Returns
    -------
    torch.Tensor
        Shape ``(n, num_classes)``, float64.
    """

    def losses(model: torch.Tensor) -> torch.Tensor:
        out = []
        for k in range(num_classes):
            label = torch.full((inputs.shape[0],), k, dtype=torch.long)
            loss = evaluate(model, inputs, label)[0]
            out.append(math.inf if math.isnan(loss) else loss)
        return torch.tensor(out, dtype=torch.float64)

    reference = losses(global_params)
    rows = torch.stack([losses(global_params + u) for u in updates.to(global_params.device)])
    log_ratio = torch.nan_to_num(reference - rows, nan=0.0)
    return log_ratio.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND).exp()


def canonical_order(updates: torch.Tensor) -> np.ndarray:
    """An order of the rows that does not depend on the order they came in.

    Rows sorted by norm, then sum, then the dot product with a fixed random
    vector (float64); only identical rows (interchangeable) tie in practice.

    Examples
    --------
    >>> canonical_order(torch.tensor([[3.0, 0.0], [1.0, 0.0], [2.0, 0.0]])).tolist()
    [1, 2, 0]
    """
    x = updates.to(torch.float64)
    probe = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    keys = [(x @ probe.to(x.device)), x.sum(dim=1), x.norm(dim=1)]
    return np.lexsort([k.cpu().numpy() for k in keys])


def hdbscan_labels(distances: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """HDBSCAN clusters of a precomputed distance matrix; noise points become singletons.

    scikit-learn's HDBSCAN (``min_cluster_size=2``, ``min_samples=1``, one
    cluster allowed), the algorithm of the ``hdbscan`` package DeepSight uses.
    Its result can depend on the order of the points when distances tie, so
    the points are clustered in ``order`` (:func:`canonical_order`) when given.

    Examples
    --------
    >>> d = np.array([[0, 1, 9, 9], [1, 0, 9, 9], [9, 9, 0, 1], [9, 9, 1, 0]], float)
    >>> hdbscan_labels(d).tolist()
    [0, 0, 1, 1]
    """
    from sklearn.cluster import HDBSCAN  # lazy: scikit-learn costs seconds at import

    n = distances.shape[0]
    if n < 2:
        return np.zeros(n, dtype=int)
    if order is not None:
        out = np.empty(n, dtype=int)
        out[order] = hdbscan_labels(distances[np.ix_(order, order)])
        return out
    labels: np.ndarray = (
        HDBSCAN(
            min_cluster_size=2,
            min_samples=1,
            metric="precomputed",
            allow_single_cluster=True,
            copy=True,
        )
        .fit(distances)
        .labels_.copy()
    )
    noise = labels < 0
    labels[noise] = labels.max(initial=-1) + 1 + np.arange(int(noise.sum()))
    return labels


def euclidean(features: torch.Tensor) -> np.ndarray:
    """Pairwise Euclidean distances of the rows, float64."""
    x = features.to(torch.float64)
    distances: np.ndarray = torch.cdist(x, x).cpu().numpy()
    return distances


def cosine_distances(rows: torch.Tensor) -> np.ndarray:
    """Pairwise ``1 - cos`` of the rows (a zero row is at distance 1 from every other)."""
    x = rows.to(torch.float64)
    x = x / x.abs().amax(dim=1, keepdim=True).clamp_min(1e-300)
    x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-300)
    out = (1.0 - x @ x.T).clamp(0.0, 2.0)
    out.fill_diagonal_(0.0)
    distances: np.ndarray = out.cpu().numpy()
    return distances


def ensemble_clusters(clusterings: list[np.ndarray], order: np.ndarray | None = None) -> np.ndarray:
    r"""Cluster on :math:`1 - a_{ij}`, with :math:`a_{ij}` the share of clusterings joining i, j.

    ``order`` as for :func:`hdbscan_labels`.

    Examples
    --------
    >>> ensemble_clusters([np.array([0, 0, 1, 1]), np.array([0, 0, 1, 2])]).tolist()
    [0, 0, 1, 1]
    """
    together = np.mean([c[:, None] == c[None, :] for c in clusterings], axis=0)
    return hdbscan_labels(1.0 - together, order)


def deepsight(
    updates: torch.Tensor,
    neurons: np.ndarray,
    biases: np.ndarray | None,
    ddif: list[torch.Tensor],
    tau: float = 1 / 3,
) -> Aggregate:
    r"""DeepSight: label models by threshold exceedings, reject suspicious clusters, clip, average.

    1. NEUPs :math:`c_i` of the output layer (:func:`neups`) and threshold
       exceedings :math:`TE_i` (:func:`threshold_exceedings`); a model is
       suspicious when :math:`TE_i \le \mathrm{median}_j(TE_j) / 2`;
    2. clusterings (:func:`hdbscan_labels`) of the cosine distances of the
       output-layer bias updates, of each DDif matrix in ``ddif`` and of the
       NEUPs, merged by :func:`ensemble_clusters`;
    3. a cluster is accepted when its share of suspicious models is below
       :math:`\tau`;
    4. :math:`g = \frac{1}{|A|} \sum_{i \in A} u_i \min(1, S / \lVert u_i \rVert)`
       over the accepted models :math:`A`, with :math:`S` the median norm of all
       updates.

    Rieger, Nguyen, Miettinen and Sadeghi, "DeepSight: Mitigating Backdoor
    Attacks in Federated Learning Through Deep Model Inspection", NDSS 2022,
    Algorithms 1 and 2 (:math:`\tau = 1/3`). Without a bias the output-layer
    neuron blocks stand in for it. The clusterings see the rows in
    :func:`canonical_order`, so the verdicts do not depend on the order the
    clients replied in. No accepted model: the aggregate is zero (the global
    model is kept).

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix ``(n, d)``.
    neurons, biases : numpy.ndarray
        Output layer (:func:`output_neurons`).
    ddif : list of torch.Tensor
        One ``(n, P)`` DDif matrix per seed of random inputs (:func:`ddifs`);
        may be empty.
    tau : float
        Largest share of suspicious models an accepted cluster may hold (exclusive).

    Returns
    -------
    Aggregate
        Accepted rows ``selected``, the rest ``flagged``; ``scores`` are the
        threshold exceedings.

    Examples
    --------
    >>> u = torch.tensor([[1.0, 1.0, 1.0], [1.1, 0.9, 1.0], [0.9, 1.1, 1.0], [0.0, 0.0, 9.0]])
    >>> agg = deepsight(u, np.array([[0], [1], [2]]), np.array([0, 1, 2]), [])
    >>> agg.selected, agg.flagged
    ([0, 1, 2], [3])
    """
    n = updates.shape[0]
    neup = neups(updates, neurons)
    te = threshold_exceedings(neup)
    suspicious = (te.double() <= te.double().median() / 2).numpy()
    bias_index = torch.as_tensor(biases if biases is not None else neurons[:, 0])
    bias_rows = updates[:, bias_index.to(updates.device)]
    order = canonical_order(updates)
    clusterings = [hdbscan_labels(cosine_distances(bias_rows), order)]
    clusterings += [hdbscan_labels(euclidean(m), order) for m in ddif]
    clusterings.append(hdbscan_labels(euclidean(neup), order))
    labels = ensemble_clusters(clusterings, order)
    keep = np.zeros(n, dtype=bool)
    for label in np.unique(labels):
        members = labels == label
        keep[members] = suspicious[members].mean() < tau
    selected = np.flatnonzero(keep).tolist()
    flagged = np.flatnonzero(~keep).tolist()
    scores = te.to(torch.float64)
    if not selected:
        return Aggregate(torch.zeros_like(updates[0]), selected=[], flagged=flagged, scores=scores)
    norms = row_norms(updates)
    median = norms.quantile(0.5)
    scale = torch.where(norms > median, median / norms, 1.0)
    weights = torch.where(torch.as_tensor(keep, device=norms.device), scale, 0.0) / len(selected)
    update = weights.to(updates.dtype) @ updates
    return Aggregate(update, selected=selected, flagged=flagged, scores=scores)


class DeepSight(RobustStrategy):
    """DeepSight (:func:`deepsight`), DDifs on uniform random inputs evaluated on the server.

    The DDifs (:func:`ddifs`) need the models' outputs: ``ctx.local_trainer``'s
    ``evaluate`` runs them on ``num_inputs`` inputs drawn uniformly in ``[0, 1)``
    (the pixel range) per seed with ``ctx.generator``. The input shape is read
    off ``root_data``, given at construction (the assembly layer draws
    ``root_size`` training examples, one by default, as for FangRejection);
    their values are not used. The output layer comes from the model's layout
    (:func:`output_neurons`).

    Parameters
    ----------
    tau : float
        Largest share of suspicious models an accepted cluster may hold, in (0, 1] (paper: 1/3).
    seeds : int
        Sets of random inputs, one DDif clustering each (paper: 3); 0 skips the DDifs.
    num_inputs : int
        Random inputs per set.
    root_size : int
        Examples the assembly layer draws for ``root_data`` (only their shape is used).
    root_data : tuple of torch.Tensor, optional
        ``(x, y)``; ``x.shape[1:]`` is the input shape. Required before the
        first aggregation unless ``seeds=0``.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy` (``local_trainer``
        evaluates the models for the DDifs).
    """

    def __init__(
        self,
        *,
        tau: float = 1 / 3,
        seeds: int = 3,
        num_inputs: int = 64,
        root_size: int = 1,
        root_data: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tau = check_number("tau", tau, 0.0, 1.0)
        if self.tau == 0:
            raise ValueError("tau must be in (0, 1], got 0")
        if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 0:
            raise ValueError(f"seeds must be a non-negative integer, got {seeds!r}")
        self.seeds = seeds
        self.num_inputs = check_positive_int("num_inputs", num_inputs)
        self.root_size = check_positive_int("root_size", root_size)
        self.root_data = root_data

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Compute DDifs on random inputs, then :func:`deepsight`."""
        neurons, biases = output_neurons(self.layout, updates.shape[1])
        trainer = ctx.local_trainer
        matrices: list[torch.Tensor] = []
        if self.seeds:
            if trainer is None or self.root_data is None:
                raise RuntimeError(
                    "DeepSight needs root_data= (for the input shape) and local_trainer= "
                    "(its evaluate method computes the DDifs); set seeds=0 to skip the DDifs"
                )
            shape = tuple(self.root_data[0].shape[1:])
            for _ in range(self.seeds):
                inputs = torch.rand((self.num_inputs, *shape), generator=ctx.generator)
                matrices.append(
                    ddifs(trainer.evaluate, ctx.global_params, updates, inputs, len(neurons))
                )
        return deepsight(updates, neurons, biases, matrices, self.tau)
