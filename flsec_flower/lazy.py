"""Package attributes imported on first use (PEP 562), shared by ``strategies`` and ``clients``.

Flower starts a fresh ClientApp process per message, so a package whose
``__init__`` imported every rule or attack would pay torch's and Flower's import
time on every round. Both packages instead name each public attribute's module
in a table and resolve it on first access. This module imports nothing heavy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any


def lazy_attributes(
    package: str,
    table: Mapping[str, str],
    public: Sequence[str],
    namespace: MutableMapping[str, Any],
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package whose names load lazily.

    Parameters
    ----------
    package : str
        The package's ``__name__`` (for the error message).
    table : Mapping[str, str]
        Public name -> the module that defines it, e.g. ``{"Krum": "strategies.krum"}``.
    public : Sequence[str]
        The package's ``__all__``.
    namespace : MutableMapping[str, Any]
        The package's ``globals()``: a resolved name is cached there, so later
        look-ups do not come back to ``__getattr__``.

    Returns
    -------
    tuple of callables
        ``(__getattr__, __dir__)`` to bind at the package's module level.

    Examples
    --------
    >>> ns: dict[str, object] = {}
    >>> get, names = lazy_attributes("pkg", {"sqrt": "math"}, ["sqrt"], ns)
    >>> get("sqrt")(9.0), "sqrt" in ns, names()
    (3.0, True, ['sqrt'])
    >>> get("nope")
    Traceback (most recent call last):
    AttributeError: module 'pkg' has no attribute 'nope'
    """

    def getattr_(name: str) -> object:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *public})

    return getattr_, dir_
