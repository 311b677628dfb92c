"""LASA (Xu et al.): sparsified updates, layer-wise norm and sign filters by median z-scores."""

from __future__ import annotations

from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import row_norms
from strategies._params import check_number
from strategies.base import RobustStrategy

RELATIVE_ROUNDING = 1e-6
"""A spread of values below this share of their median is float rounding, not a spread."""

Layer = tuple[slice, bool]
"""A layer's columns of the update matrix, and whether it is sparsified (a weight tensor)."""


def mz_scores(values: torch.Tensor) -> torch.Tensor:
    r"""Median z-scores :math:`|x_i - \mathrm{med}(x)| / \mathrm{std}(x)` (population std).

    Values whose spread is below :data:`RELATIVE_ROUNDING` of the median's
    magnitude (equal up to float rounding) all score 0.

    Examples
    --------
    >>> mz_scores(torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64))
    tensor([0.8018, 0.2673, 0.2673, 1.8708], dtype=torch.float64)
    """
    spread = float(values.std(correction=0))
    median = values.quantile(0.5)
    if not spread > RELATIVE_ROUNDING * float(median.abs()) or spread == 0:
        return torch.zeros_like(values)
    return (values - median).abs() / spread


def sparsify(rows: torch.Tensor, sparsity: float) -> torch.Tensor:
    r"""Keep each row's coordinates above its :math:`k`-th largest magnitude.

    :math:`k = \lfloor (1 - s) D \rfloor` for rows of :math:`D` coordinates
    (at least 1); ties with the :math:`k`-th are kept and zeros stay zero.
    The authors' code keeps magnitudes strictly above the :math:`k`-th
    (:math:`k - 1` of them); this keeps the paper's top :math:`k`.
    ``sparsity = 0`` keeps everything.

    Examples
    --------
    >>> sparsify(torch.tensor([[3.0, -1.0, 2.0, 0.5]]), sparsity=0.5)
    tensor([[3., 0., 2., 0.]])
    """
    if sparsity == 0 or rows.shape[1] == 0:
        return rows
    k = max(1, int(rows.shape[1] * (1.0 - sparsity)))
    threshold = torch.topk(rows.abs(), k, dim=1).values[:, -1:]
    keep = (rows.abs() >= threshold) & (rows != 0)
    return torch.where(keep, rows, torch.zeros_like(rows))


def lasa(
    updates: torch.Tensor,
    layers: list[Layer],
    sparsity: float = 0.3,
    lambda_n: float = 2.0,
    lambda_s: float = 1.0,
) -> Aggregate:
    r"""LASA: clip, sparsify, and average each layer over the clients both filters admit.

    1. clip every update to the median norm :math:`M`:
       :math:`\bar u_i = u_i \min(1, M / \lVert u_i \rVert)`;
    2. sparsify: on the weight layers (together), keep each client's
       coordinates above its :math:`k`-th largest magnitude (:func:`sparsify`);
    3. for each layer :math:`l`, with :math:`\tilde u_i^l` the client's
       sparsified layer, the norm :math:`\lVert \tilde u_i^l \rVert` and the
       sign purity :math:`\rho_i^l = \sum \mathrm{sgn}(\tilde u_i^l) / \sum
       |\mathrm{sgn}(\tilde u_i^l)|` (0 for a zero layer) are scored by
       median z-scores (:func:`mz_scores`); the layer's benign set is
       :math:`B^l = \{i : MZ(\lVert \cdot \rVert)_i < \lambda_n,\ MZ(\rho)_i < \lambda_s\}`
       (everyone when empty); the norms are those of the clipped updates, so
    with a small spread the clients below the median norm stand out (as in
    the authors' code);
    4. :math:`g^l = \frac{1}{|B^l|} \sum_{i \in B^l} \tilde u_i^l`.

    Xu, Zhang and Hu, "Achieving Byzantine-Resilient Federated Learning via
    Layer-Adaptive Sparsified Model Aggregation", WACV 2025 (arXiv
    2409.01435). Follows the authors' code (``JiiahaoXU/LASA``,
    ``algorithms/defense/lasa.py``) where the paper leaves a choice: the
    aggregate is of the clipped and sparsified updates, biases are not
    sparsified, :math:`k = \lfloor (1 - s) D \rfloor` over the weight layers.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    layers : list of (slice, bool)
        Each layer's columns and whether it is sparsified.
    sparsity : float
        Share :math:`s` of the weight coordinates zeroed, in ``[0, 1)``.
    lambda_n, lambda_s : float
        MZ-score bounds of the norm and sign filters.

    Returns
    -------
    Aggregate
        The layer-wise means; ``scores`` are each row's share of layers
        where it is filtered out; rows filtered out of at least half of the
        layers are ``flagged``, the others ``selected``.

    Examples
    --------
    >>> u = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.8, 0.6], [-3.0, -4.0]])
    >>> agg = lasa(u, [(slice(0, 2), False)])
    >>> agg.flagged, agg.update
    ([4], tensor([0.6000, 0.6000]))
    """
    n = updates.shape[0]
    norms = row_norms(updates)
    median = float(norms.quantile(0.5))
    scale = torch.where(norms > median, median / norms, 1.0).to(updates.dtype)
    clipped = updates * scale[:, None]
    weight_cols = torch.cat(
        [torch.arange(c.start, c.stop, device=updates.device) for c, sparse in layers if sparse]
        or [torch.zeros(0, dtype=torch.long, device=updates.device)]
    )
    clipped[:, weight_cols] = sparsify(clipped[:, weight_cols], sparsity)
    update = torch.zeros_like(updates[0])
    excluded = torch.zeros(n, dtype=torch.float64)
    for cols, _ in layers:
        block = clipped[:, cols]
        signs = torch.sign(block).to(torch.float64)
        nonzero = signs.abs().sum(dim=1)
        purity = torch.where(nonzero > 0, signs.sum(dim=1) / nonzero.clamp(min=1.0), 0.0)
        benign = (mz_scores(row_norms(block)) < lambda_n) & (mz_scores(purity) < lambda_s)
        if not bool(benign.any()):
            benign = torch.ones_like(benign)
        excluded += (~benign).cpu().to(torch.float64)
        update[cols] = block[benign.to(block.device)].mean(dim=0)
    share = excluded / max(1, len(layers))
    flagged = (share >= 0.5).nonzero().flatten().tolist()
    selected = (share < 0.5).nonzero().flatten().tolist()
    return Aggregate(update, selected=selected, flagged=flagged, scores=share)


class LASA(RobustStrategy):
    """LASA (:func:`lasa`): the layers come from the model's layout.

    Xu, Zhang and Hu, WACV 2025 (arXiv 2409.01435).

    Parameters
    ----------
    sparsity : float
        Share of the weight coordinates zeroed, in [0, 1) (authors' default: 0.3).
    lambda_n : float
        Norm MZ-score bound (authors: 2, 1 on CIFAR).
    lambda_s : float
        Sign MZ-score bound (authors: 1).
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`.
    """

    def __init__(
        self,
        *,
        sparsity: float = 0.3,
        lambda_n: float = 2.0,
        lambda_s: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.sparsity = check_number("sparsity", sparsity, 0.0, 1.0)
        if self.sparsity == 1:
            raise ValueError("sparsity must be below 1 (1 zeroes every weight), got 1")
        self.lambda_n = check_number("lambda_n", lambda_n, 0.0)
        self.lambda_s = check_number("lambda_s", lambda_s, 0.0)

    def layers(self, d: int) -> list[Layer]:
        """The layout's arrays as column ranges, weight tensors (2 or more axes) sparsified."""
        if self.layout is None:
            return [(slice(0, d), True)]
        out, start = [], 0
        for shape, size in zip(self.layout.shapes, self.layout.sizes, strict=True):
            out.append((slice(start, start + size), len(shape) >= 2))
            start += size
        return out

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Clip, sparsify and filter layer by layer, then average each layer's benign rows."""
        layers = self.layers(updates.shape[1])
        return lasa(updates, layers, self.sparsity, self.lambda_n, self.lambda_s)
