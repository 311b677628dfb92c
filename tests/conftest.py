"""Test-wide settings and shared fixtures.

Hypothesis profiles:

* ``ci``: derandomised, few examples (a few hundred fuzzed rounds in total);
  the default when ``CI`` is set and in ``make test``;
* ``dev``: as ``ci`` but random, the default for a plain ``pytest`` run;
* ``nightly``: 500 examples per test, i.e. more than 10,000 fuzzed rounds over
  the registered rules in ``tests/test_fuzz_rules.py`` alone
  (``HYPOTHESIS_PROFILE=nightly``).

Tests that set ``max_examples`` themselves keep their count.

Fixtures for strategy tests: ``fit_res`` builds one client's fit reply and
``initialised_strategy`` builds a strategy with its initial global model set.
"""

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters
from hypothesis import settings

from flsec_flower.wire import PARTITION_ID

settings.register_profile("ci", derandomize=True, print_blob=True, max_examples=8)
settings.register_profile("dev", max_examples=8)
settings.register_profile("nightly", max_examples=500, print_blob=True)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev")
)


def make_fit_res(
    arrays: np.ndarray | Sequence[Any], partition_id: int, num_examples: int = 10
) -> tuple[None, FitRes]:
    """A successful fit reply ``(None, FitRes)`` whose metrics carry ``partition_id``.

    ``arrays`` is the model as a list of NumPy arrays, or one flat row (an
    array or a list of numbers, sent as a single float32 array).
    """
    if isinstance(arrays, np.ndarray) or not all(isinstance(a, np.ndarray) for a in arrays):
        arrays = [np.asarray(arrays, np.float32)]
    res = FitRes(
        Status(Code.OK, ""),
        ndarrays_to_parameters(list(arrays)),
        num_examples,
        {PARTITION_ID: partition_id},
    )
    return None, res


def make_initialised_strategy(strategy_cls: type, init: list[np.ndarray], **kwargs: Any) -> Any:
    """``strategy_cls(**kwargs)`` on the CPU (unless ``device`` is given), global model ``init``."""
    kwargs.setdefault("device", "cpu")
    strategy = strategy_cls(initial_parameters=ndarrays_to_parameters(init), **kwargs)
    strategy.initialize_parameters(None)
    return strategy


@pytest.fixture
def fit_res() -> Callable[..., tuple[None, FitRes]]:
    """Factory ``fit_res(arrays, partition_id, num_examples=10)`` of fit replies."""
    return make_fit_res


@pytest.fixture
def initialised_strategy() -> Callable[..., Any]:
    """Factory ``initialised_strategy(strategy_cls, init, **kwargs)`` of ready strategies."""
    return make_initialised_strategy
