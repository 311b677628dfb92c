"""flsec-flower: federated-learning security research on Flower.

The engine: configuration, data, models, training, evaluation, results, the
Flower apps, the simulation runner and the ``flsec`` CLI. Robust rules live in
the top-level package ``strategies``, attacks in ``clients``.

``load_results`` is imported on first use, so the CLI starts without pandas.
"""

__all__ = ["load_results"]
__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    if name != "load_results":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from flsec_flower.results import load_results

    return load_results
