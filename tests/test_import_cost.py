"""`import strategies` / `import clients` load no heavy optional dependency.

Flower deployments start a fresh ``flwr-clientapp`` process per message, so
whatever these packages import at module load is paid on every message.
The check is on the set of modules a fresh interpreter holds after the
import (a fact), not on a time; ``benchmarks/import_time.py`` times it.
"""

from __future__ import annotations

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
