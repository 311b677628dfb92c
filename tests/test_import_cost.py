"""`import strategies` / `import clients` load no heavy optional dependency.

Flower deployments start a fresh ``flwr-clientapp`` process per message, so
whatever these packages import at module load is paid on every message.
The check is on the set of modules a fresh interpreter holds after the
import (a fact), not on a time; ``benchmarks/import_time.py`` times it.
The packages resolve their public names on first use (PEP 562
``__getattr__``), so ``import strategies`` / ``import clients`` load neither
torch nor Flower; the lazy table, the ``TYPE_CHECKING`` imports (what type
checkers see) and ``__all__`` must name the same things.
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pandas", "torchvision", "sklearn", "scipy", "matplotlib")


def imported_top_level(module: str) -> set[str]:
    """Top-level package names in ``sys.modules`` after ``import module`` in a fresh process."""
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=True,
    )
    return {name.split(".")[0] for name in out.stdout.split()}


@pytest.mark.parametrize(
    "module",
    ["strategies", "clients", "flsec_flower.app.client_app", "flsec_flower.app.server_app"],
)
def test_import_loads_no_heavy_dependency(module: str) -> None:
    loaded = imported_top_level(module)
    assert "strategies" in loaded or "clients" in loaded or "flsec_flower" in loaded
    assert sorted(loaded & set(HEAVY)) == []


def test_heavy_dependencies_still_load_where_used() -> None:
    # The check above would pass vacuously if the probe could not see these.
    assert {"sklearn"} <= imported_top_level("sklearn.cluster")


@pytest.mark.parametrize("package", ["strategies", "clients"])
def test_package_import_loads_neither_torch_nor_flower(package: str) -> None:
    loaded = imported_top_level(package)
    assert package in loaded
    assert sorted(loaded & {"torch", "flwr", "numpy"}) == []


def type_checking_imports(package: str) -> dict[str, str]:
    """Name -> module of the ``from X import name`` lines under ``if TYPE_CHECKING:``."""
    tree = ast.parse((ROOT / package / "__init__.py").read_text())
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                assert isinstance(stmt, ast.ImportFrom) and stmt.module, ast.unparse(stmt)
                found.update({alias.name: stmt.module for alias in stmt.names})
    return found


@pytest.mark.parametrize("package", ["strategies", "clients"])
def test_lazy_names_agree_and_resolve(package: str) -> None:
    module = importlib.import_module(package)
    lazy = module._LAZY
    assert type_checking_imports(package) == lazy
    assert sorted(module.__all__) == sorted(lazy)
    for name, where in lazy.items():
        assert getattr(module, name) is getattr(importlib.import_module(where), name)
    assert set(lazy) <= set(dir(module))
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'Nope'"):
        _ = module.Nope
