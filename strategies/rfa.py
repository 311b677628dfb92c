"""RFA: the geometric median by Weiszfeld iterations (Pillutla et al., 2022)."""

from __future__ import annotations

import math
from typing import Any

import torch

from flsec_flower.aggregation import Aggregate, RoundContext
from strategies._linalg import combine_rows, gram, sq_distances_to_combination
from strategies.base import RobustStrategy
from strategies.median import coordinate_median

INITS = ("median", "mean", "zero")
"""Starting points of the Weiszfeld iterations."""

DEFAULT_ITERATIONS = 100
"""Default cap on the Weiszfeld steps (the tolerance usually stops them far earlier)."""

DEFAULT_TOL = 1e-6
"""Default relative tolerance: stop once a step moves less than this times the median distance."""


def check_params(iterations: int, nu: float, init: str, tol: float = 0.0) -> None:
    """Raise ``ValueError`` naming the first invalid parameter of :func:`geometric_median`."""
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if not (math.isfinite(nu) and nu > 0):
        raise ValueError(f"nu must be positive and finite, got {nu!r}")
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be non-negative and finite, got {tol!r}")


def geometric_median(
    updates: torch.Tensor,
    iterations: int = DEFAULT_ITERATIONS,
    nu: float = 1e-6,
    weights: torch.Tensor | None = None,
    init: str = "median",
    tol: float = DEFAULT_TOL,
    chunk: int | None = None,
) -> Aggregate:
    r"""Approximate geometric median by Weiszfeld steps from a robust start.

    The geometric median minimises :math:`F(z) = \sum_i \alpha_i \|z - u_i\|`.
    Each Weiszfeld step re-weights the updates by their inverse distance to
    the current point:

    .. math:: \beta_i = \frac{\alpha_i}{\|z^{(t)} - u_i\|}, \qquad
              z^{(t+1)} = \frac{\sum_i \beta_i u_i}{\sum_i \beta_i} .

    Pillutla, Kakade and Harchaoui, "Robust Aggregation for Federated
    Learning", IEEE Transactions on Signal Processing 70, 2022 (RFA, their
    Algorithm 2). They smooth the distances as :math:`\max(\nu, \cdot)`;
    here rows closer than :math:`\nu` to :math:`z` count as coinciding with
    it and get Vardi and Zhang's step (:func:`weiszfeld_step`), which also
    leaves a starting point that is itself an update. Both agree whenever no
    row is within :math:`\nu`. The steps stop after ``iterations`` or once a
    step moves :math:`z` by at most ``tol`` times the median of the distances
    :math:`\|z^{(t)} - u_i\|` (``tol=0`` runs exactly ``iterations`` steps).

    Starting point (``init``):

    * ``"median"`` (default): the coordinate-wise median. It stays within
      the honest rows' coordinate range while fewer than half of the rows
      are Byzantine, and the steps never increase :math:`F`, so with ``f < n/2`` Byzantine rows
      and honest rows within :math:`r` of a point :math:`h`,

      .. math:: \|z - h\| \le \frac{n \|z^{(0)} - h\| + 2 (n - f) r}{n - 2 f}

      whatever the Byzantine rows hold (the triangle inequality on
      :math:`F(z) \le F(z^{(0)})`): a constant times the honest spread;
    * ``"mean"``: the weighted mean, as RFA's code; with ``iterations=1``
      this is their *one-step RFA*. A far outlier's pull only shrinks by a
      constant factor per step (about :math:`f / (n - f)`), so a few steps
      leave part of a 1e30 row in the result;
    * ``"zero"``: the origin, as the RFA of Karimireddy, He and Jaggi (ICML
      2021, ``T = 3``, :math:`\nu = 0.1`) and He, Karimireddy and Jaggi's
      bucketing paper (``T = 8``). One step gives
      :math:`\sum_i \alpha_i u_i / \|u_i\| \,/\, \sum_i \alpha_i / \|u_i\|`.

    Every distance :math:`\|z^{(t)} - u_i\|` and every step length is
    computed from the Gram matrix of the updates and the start
    (:math:`z^{(t)}` is a combination of them), so the whole run costs one
    Gram matrix and one weighted sum of the rows.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``.
    iterations : int
        Most Weiszfeld steps :math:`T \ge 1` (:data:`DEFAULT_ITERATIONS`).
    nu : float
        Rows closer than :math:`\nu > 0` to the current point coincide with it
        (:func:`weiszfeld_step`).
    weights : torch.Tensor, optional
        Client weights :math:`\alpha_i \ge 0` with a positive sum (RFA uses
        sample counts); uniform when ``None``.
    init : {"median", "mean", "zero"}
        Starting point :math:`z^{(0)}`.
    tol : float
        Relative step tolerance, ``>= 0`` (:data:`DEFAULT_TOL`).
    chunk : int, optional
        Columns per matrix product (memory bound).

    Returns
    -------
    Aggregate
        :math:`z^{(T)}`; ``scores`` holds the final normalised weights
        :math:`\beta_i / \sum_j \beta_j` of the rows.

    Examples
    --------
    >>> u = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
    >>> geometric_median(u).update
    tensor([1., 1.])
    >>> u = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 100.0]])
    >>> geometric_median(u, iterations=100, tol=0.0).update
    tensor([0.0000, 0.5774])
    """
    n, d = updates.shape
    check_params(iterations, nu, init, tol)
    device = updates.device
    alpha = (
        torch.full((n,), 1.0 / n, dtype=torch.float64, device=device)
        if weights is None
        else weights.to(device=device, dtype=torch.float64) / weights.sum().item()
    )
    if init == "mean":
        g = gram(updates, chunk=chunk)
        w = alpha.clone()
    else:
        start = coordinate_median(updates).update if init == "median" else updates.new_zeros(d)
        g = gram(updates, extra=start[None, :], chunk=chunk)
        w = torch.zeros(n + 1, dtype=torch.float64, device=device)
        w[n] = 1.0
    for _ in range(iterations):
        dist = sq_distances_to_combination(g, w)[:n].sqrt()
        new = weiszfeld_step(g, w, alpha, dist, nu)
        step = new - w
        moved = float((step @ g @ step).clamp(min=0.0).sqrt())
        w = new
        if moved <= tol * float(dist.median()):
            break
    update = combine_rows(updates, w[:n])
    if init != "mean" and float(w[n]) != 0.0:  # the start is still part of z
        update = update.add_(start, alpha=float(w[n]))
    return Aggregate(update=update, scores=w[:n])


def weiszfeld_step(
    g: torch.Tensor, w: torch.Tensor, alpha: torch.Tensor, dist: torch.Tensor, nu: float
) -> torch.Tensor:
    r"""One Weiszfeld step from :math:`z = \sum_j w_j x_j`, as new combination weights.

    Rows farther than :math:`\nu` get :math:`\beta_i = \alpha_i / \|z - u_i\|`
    and :math:`T = \sum \beta_i u_i / \sum \beta_i`. Rows within
    :math:`\nu` of :math:`z` (total weight :math:`\eta`) count as
    coinciding with it: plain Weiszfeld would stay stuck on such a row
    (e.g. a coordinate median that is itself an update), so the step is
    Vardi and Zhang's, "The multivariate L1-median and associated data
    depth", PNAS 97(4), 2000:

    .. math:: z^+ = (1 - \lambda) T + \lambda z, \qquad
              \lambda = \min\Bigl(1, \frac{\eta}{\|\sum_i \beta_i (u_i - z)\|}\Bigr),

    which never increases :math:`\sum_i \alpha_i \|z - u_i\|` and stays at
    a row only when that row is the geometric median. With no row within
    :math:`\nu` it is the plain step.

    Parameters
    ----------
    g : torch.Tensor
        Gram matrix of the rows (and any extra start rows), float64.
    w : torch.Tensor
        Current combination weights (summing to one).
    alpha : torch.Tensor
        Client weights, shape ``(n,)``, summing to one.
    dist : torch.Tensor
        Distances :math:`\|z - u_i\|`, shape ``(n,)``.
    nu : float
        Distance below which a row coincides with :math:`z`.
    """
    n = alpha.shape[0]
    near = dist < nu
    beta = torch.where(near, 0.0, alpha / dist.clamp(min=nu))
    total = float(beta.sum())
    if total == 0.0:  # every row coincides with z
        return w
    new = torch.zeros_like(w)
    new[:n] = beta / total
    eta = float(alpha[near].sum())
    if eta == 0.0:
        return new
    diff = new - w
    pull = total * float((diff @ g @ diff).clamp(min=0.0).sqrt())
    lam = 1.0 if pull <= eta else eta / pull
    return (1.0 - lam) * new + lam * w


class GeometricMedian(RobustStrategy):
    """Flower strategy for RFA (:func:`geometric_median`).

    Parameters
    ----------
    iterations : int
        Most Weiszfeld steps (:data:`DEFAULT_ITERATIONS`).
    nu : float
        Coincidence radius (1e-6, see :func:`weiszfeld_step`).
    init : {"median", "mean", "zero"}
        Starting point (``"median"``: robust to a minority of huge rows).
    tol : float
        Relative step tolerance (:data:`DEFAULT_TOL`); 0 runs every step.
    **kwargs
        Passed to :class:`~strategies.base.RobustStrategy`; with
        ``weighted=True`` the clients are weighted by their reported sample
        counts, as in RFA.
    """

    supports_weighting = True

    def __init__(
        self,
        *,
        iterations: int = DEFAULT_ITERATIONS,
        nu: float = 1e-6,
        init: str = "median",
        tol: float = DEFAULT_TOL,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_params(iterations, nu, init, tol)
        self.iterations = iterations
        self.nu = nu
        self.init = init
        self.tol = tol

    def aggregate_updates(self, updates: torch.Tensor, ctx: RoundContext) -> Aggregate:
        """Return the Weiszfeld geometric median of ``updates``."""
        weights = ctx.num_examples if self.weighted else None
        return geometric_median(
            updates,
            iterations=self.iterations,
            nu=self.nu,
            weights=weights,
            init=self.init,
            tol=self.tol,
        )
