"""Constructor-argument checks shared by the rules: each error names the parameter."""

from __future__ import annotations

import math


def check_number(name: str, value: object, low: float, high: float = math.inf) -> float:
    """Return ``value`` as a float if it is a finite number in ``[low, high]``.

    Raises
    ------
    ValueError
        Naming ``name`` and the allowed range.

    Examples
    --------
    >>> check_number("c", 0.5, 0.0, 1.0)
    0.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
    return float(value)


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an integer ``>= 1``, else raise ``ValueError`` naming it.

    Examples
    --------
    >>> check_positive_int("window", 3)
    3
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
