"""Fast, exact building blocks shared by the distance- and coordinate-based rules.

* :func:`gram` — the Gram matrix of the (centred) update rows from one matrix
  product per chunk of columns, accumulated in float64. Every distance the
  rules need (Krum's pairwise distances, the Weiszfeld and centred-clipping
  distances to a combination of rows) follows from it without touching ``U``
  again.
* :func:`sorted_columns` — every coordinate's values in ascending order, for
  the coordinate-wise rules (median, trimmed mean, Bulyan).

Every Gram and distance matrix returned here is exactly symmetric (bit for
bit, see :func:`symmetrize`) with an exactly zero diagonal for distances, so
a selection never depends on which of ``(i, j)`` and ``(j, i)`` a rule reads
and scikit-learn's symmetry checks (FLAME's HDBSCAN) always pass.

Both work on chunks of columns, so the extra memory is a few MiB whatever
``d`` is, and on whatever device the updates live.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

CPU_CHUNK = 1 << 15
"""Columns per chunk on the CPU: a chunk of 100 rows (13 MiB) stays in the last-level cache."""

CUDA_CHUNK = 1 << 20
"""Columns per chunk on a GPU: large enough to fill the device."""

CENTRE_SAMPLE = 4096
"""Coordinates sampled (evenly strided) to pick the centring row of :func:`gram`."""


def resolve_chunk(chunk: int | None, device: torch.device) -> int:
    """Return ``chunk``, or the device's default when ``None``; reject a non-positive value."""
    if chunk is None:
        return CUDA_CHUNK if device.type == "cuda" else CPU_CHUNK
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of columns, got {chunk!r}")
    return int(chunk)


def column_slices(d: int, chunk: int) -> Iterator[slice]:
    """Yield consecutive column slices of at most ``chunk`` columns covering ``range(d)``."""
    for start in range(0, d, chunk):
        yield slice(start, min(start + chunk, d))


def symmetrize(matrix: torch.Tensor) -> torch.Tensor:
    r"""The exactly symmetric matrix :math:`\tfrac12 (M + M^\top)`.

    Floating-point addition is commutative, so :math:`M_{ij} + M_{ji}` and
    :math:`M_{ji} + M_{ij}` round to the same value and the result is
    symmetric bit for bit; the diagonal is unchanged. A float32 matrix
    product ``B @ B.T`` is not always symmetric (its blocks are summed in
    different orders), which is enough to flip a near-tie of two scores.

    Examples
    --------
    >>> symmetrize(torch.tensor([[1.0, 2.0], [4.0, 3.0]]))
    tensor([[1., 3.],
            [3., 3.]])
    """
    return 0.5 * (matrix + matrix.T)


def sq_distances(gram_matrix: torch.Tensor) -> torch.Tensor:
    r"""Squared distances :math:`D_{ij} = \max(0, G_{ii} + G_{jj} - 2 G_{ij})`, zero diagonal.

    Exactly symmetric when ``gram_matrix`` is (every Gram matrix of this
    module is): :math:`G_{ii} + G_{jj}` and :math:`G_{jj} + G_{ii}` round alike.
    """
    diag = gram_matrix.diagonal()
    dist = (diag[:, None] + diag[None, :] - 2.0 * gram_matrix).clamp_(min=0.0)
    dist.fill_diagonal_(0.0)
    return dist


def sq_distances_to_combination(gram_matrix: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""Squared distances from every row :math:`x_i` to :math:`z = \sum_j w_j x_j`.

    .. math:: \|x_i - z\|^2 = G_{ii} - 2 (G w)_i + w^\top G w

    holds for the Gram matrix of the rows centred at any point when the
    weights sum to one.
    """
    gw = gram_matrix @ weights
    return (gram_matrix.diagonal() - 2.0 * gw + weights @ gw).clamp_(min=0.0)


def centre_row(updates: torch.Tensor) -> int:
    """Index of a robust central row (a medoid), judged on evenly strided coordinates.

    The row minimising the sum of squared distances to its ``n // 2`` nearest
    rows on a sample of :data:`CENTRE_SAMPLE` coordinates: while fewer than
    half of the rows are outliers, it is an inlier, so centring at it keeps the
    centred inliers small whatever the outliers hold.
    """
    n, d = updates.shape
    if n <= 2:
        return 0
    sample = updates[:, :: max(1, d // CENTRE_SAMPLE)].to(torch.float64)
    dist = sq_distances(sample @ sample.T)
    dist.fill_diagonal_(float("inf"))
    k = n // 2
    scores = torch.topk(dist, k, dim=1, largest=False).values.sum(dim=1)
    return int(torch.argmin(scores))


def gram(
    updates: torch.Tensor,
    extra: torch.Tensor | None = None,
    chunk: int | None = None,
) -> torch.Tensor:
    r"""Gram matrix of the rows of ``[updates; extra]`` centred at a robust central row.

    .. math:: G_{ij} = (x_i - c) \cdot (x_j - c), \qquad c = u_r,\ r = \text{centre\_row}(U)

    Distances between rows, and to any affine combination of rows, do not
    depend on :math:`c`; centring at an inlier row keeps the float32 products
    accurate when the updates share a large common component (the products'
    rounding error scales with :math:`\|x_i - c\|\,\|x_j - c\|`). Each chunk of
    columns is one float32 matrix product, summed in float64. If a product
    overflows float32 (a centred row whose squared norm exceeds about 3e38),
    the whole matrix is recomputed in float64, whose range holds the squared
    norm of any float32 vector, so a huge row never yields ``inf`` or ``nan``.

    Parameters
    ----------
    updates : torch.Tensor
        Update matrix, shape ``(n, d)``, float32.
    extra : torch.Tensor, optional
        Further rows, shape ``(k, d)``, appended after ``updates`` (e.g. the
        centred-clipping centre); they do not influence the centring row.
    chunk : int, optional
        Columns per matrix product (default: :data:`CPU_CHUNK` or :data:`CUDA_CHUNK`).

    Returns
    -------
    torch.Tensor
        Float64 matrix of shape ``(n + k, n + k)`` on the updates' device,
        exactly symmetric (:func:`symmetrize`).
    """
    n, d = updates.shape
    chunk = resolve_chunk(chunk, updates.device)
    centre = updates[centre_row(updates)] if n > 0 else updates.new_zeros(d)
    rows = n + (0 if extra is None else extra.shape[0])
    result = _gram_pass(updates, extra, centre, rows, chunk, torch.float32)
    if not bool(torch.isfinite(result).all()):
        result = _gram_pass(updates, extra, centre, rows, chunk, torch.float64)
    return symmetrize(result)


def row_norms(updates: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """L2 norm of every row in float64, accumulated over chunks of columns.

    Float64 keeps the norm of a row of ``1e30`` values finite; the chunks keep
    the extra memory small (a whole-matrix float64 copy would double it).

    Examples
    --------
    >>> row_norms(torch.tensor([[3.0, 4.0], [1e30, 0.0]]))
    tensor([5.0000e+00, 1.0000e+30], dtype=torch.float64)
    """
    if updates.dim() == 1:
        return row_norms(updates[None, :], chunk)[0]
    n, d = updates.shape
    sq = torch.zeros(n, dtype=torch.float64, device=updates.device)
    for cols in column_slices(d, resolve_chunk(chunk, updates.device)):
        block = updates[:, cols].to(torch.float64)
        sq += (block * block).sum(dim=1)
    return sq.sqrt()


def inner_products(updates: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    r"""Uncentred Gram matrix :math:`G_{ij} = u_i \cdot u_j` in float64.

    For rules whose geometry depends on the origin (cosine similarities in
    FLAME and FoolsGold). Each chunk of columns is converted to float64
    first, so products of huge rows (an attacker's ``1e30``) stay finite.

    Examples
    --------
    >>> inner_products(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    tensor([[ 5., 11.],
            [11., 25.]], dtype=torch.float64)
    """
    n, d = updates.shape
    origin = updates.new_zeros(d)
    chunk = resolve_chunk(chunk, updates.device)
    return symmetrize(_gram_pass(updates, None, origin, n, chunk, torch.float64))


def _gram_pass(
    updates: torch.Tensor,
    extra: torch.Tensor | None,
    centre: torch.Tensor,
    rows: int,
    chunk: int,
    dtype: torch.dtype,
) -> torch.Tensor:
    n, d = updates.shape
    centre = centre.to(dtype)  # the subtraction runs in ``dtype``: no float32 overflow
    out = torch.zeros((rows, rows), dtype=torch.float64, device=updates.device)
    buf = torch.empty((rows, min(chunk, d)), dtype=dtype, device=updates.device)
    for cols in column_slices(d, chunk):
        block = buf[:, : cols.stop - cols.start]
        torch.sub(updates[:, cols], centre[cols], out=block[:n])
        if extra is not None:
            torch.sub(extra[:, cols], centre[cols], out=block[n:])
        out += block @ block.T
    return out


def sorted_columns(block: torch.Tensor) -> torch.Tensor:
    """Sort every column of ``block`` (shape ``(n, c)``); return shape ``(c, n)``, ascending rows.

    On the CPU NumPy's vectorised sort is used (several times faster than
    ``torch.sort`` on short rows); elsewhere ``torch.sort``.
    """
    if block.device.type == "cpu":
        values = torch.empty((block.shape[1], block.shape[0]), dtype=block.dtype)
        values.copy_(block.T)
        values.numpy().sort(axis=1)
        return values
    return torch.sort(block, dim=0).values.T


def combine_rows(updates: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    r"""The combination :math:`\sum_i w_i u_i` of all rows, in one pass (float32 accumulation)."""
    return torch.mv(updates.T, weights.to(device=updates.device, dtype=updates.dtype))
