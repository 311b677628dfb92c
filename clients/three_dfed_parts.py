"""3DFed's parts as plain functions: noise masks, indicators, decoy models, adaptive tuning.

Li, Pang, Wu, Sun, Wang & Zhou, "3DFed: Adaptive and Extensible Framework
for Covert Backdoor Attack in Federated Learning", IEEE S&P 2023; how they
fit together is :class:`clients.three_dfed.ThreeDFedClient`'s docstring.
"""

from __future__ import annotations

import math

import numpy as np
from flwr.common import NDArrays


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


def smallest_outside(
    values: np.ndarray, excluded: np.ndarray, count: int, names: tuple[str, str, str]
) -> np.ndarray:
    """Flat indices of the ``count`` smallest ``values`` outside ``excluded``.

    Ties go by position and non-finite values count as largest.
    ``names = (key, what, outside)`` word the error raised when fewer than
    ``count`` coordinates are left.

    Examples
    --------
    >>> smallest_outside(np.array([0.3, np.nan, 0.0, 0.2]), np.array([0, 0, 1, 0]), 3,
    ...                  ("k", "picks", "the mask")).tolist()
    [3, 0, 1]
    """
    key, what, outside = names
    flat = np.asarray(values, np.float64).ravel()
    flat = np.where(np.isfinite(flat), flat, np.inf)
    keep = ~np.asarray(excluded, bool).ravel()
    if count > int(keep.sum()):
        raise ValueError(
            f"{key}: {count} {what} need {count} coordinates of the indicator layer "
            f"outside {outside}; {int(keep.sum())} are left"
        )
    return np.lexsort((flat, ~keep))[:count]


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
    return smallest_outside(
        np.abs(np.asarray(change, np.float64)),
        excluded,
        count,
        ("mask_neurons", "indicators", "the noise masks"),
    )


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


def decoy_positions(
    backdoor: np.ndarray, benign: np.ndarray, excluded: np.ndarray, count: int
) -> np.ndarray:
    r"""Flat indices of the ``count`` coordinates decoys shift, decoy ``j`` taking the ``j``-th.

    The coordinates outside ``excluded`` where the backdoor and the benign
    updates differ least, :math:`|\Delta_{bd} - \Delta_{ben}|` smallest
    (ties by position, non-finite as largest): the authors' choice of the
    parameters a decoy may move without touching the backdoor.

    Examples
    --------
    >>> bd, ben = np.array([0.5, 0.2, 0.0, 0.1]), np.array([0.3, 0.2, 0.3, 0.0])
    >>> decoy_positions(bd, ben, np.array([False, True, False, False]), 2).tolist()
    [3, 0]
    """
    return smallest_outside(
        np.abs(np.asarray(backdoor, np.float64) - np.asarray(benign, np.float64)),
        excluded,
        count,
        ("decoys", "decoy models", "the noise masks and the indicators"),
    )


def tune_decoys(decoys: int, backdoor: list[str], decoy: list[str], weak_dp: bool, cap: int) -> int:
    r"""The authors' adaptive number of decoy models for the next round.

    Weak DP: none. Otherwise every decoy read as accepted (``"a"``) is one
    too many (the defence did not spend its outlier label on it):
    :math:`k \leftarrow \max(k - \#\{\text{decoys accepted}\}, 0)`; then, if
    no backdoor indicator was accepted or clipped and no decoy accepted
    (the detector caught the backdoors), one more: :math:`k \leftarrow k + 1`.
    The result is at most ``cap``.

    Examples
    --------
    >>> tune_decoys(1, ["r", "r"], ["r"], False, 2), tune_decoys(2, ["a"], ["a", "r"], False, 2)
    (2, 1)
    >>> tune_decoys(1, ["r"], ["r"], False, 1), tune_decoys(1, ["a"], ["r"], True, 1)
    (1, 0)
    """
    if weak_dp:
        return 0
    count = max(decoys - decoy.count("a"), 0)
    if "a" not in backdoor and "c" not in backdoor and "a" not in decoy:
        count += 1
    return min(count, cap)
