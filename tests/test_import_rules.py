"""Who may import whom (ARCHITECTURE.md): the rules are read from the source, not trusted.

* the core (``flsec_flower`` outside ``flsec_flower/app``) imports neither
  ``strategies``, ``clients`` nor the assembly layer;
* ``strategies`` and ``clients`` import the core only, never each other and
  never the assembly layer.

Every ``import``/``from ... import`` statement is checked, including the ones
inside functions (lazy imports count: they are still a dependency).
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_modules(path: Path) -> set[str]:
    """Top-level dotted names imported anywhere in ``path`` (absolute imports only)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def package_files(package: str, exclude: str | None = None) -> list[Path]:
    files = sorted((ROOT / package).rglob("*.py"))
    if exclude is not None:
        files = [f for f in files if exclude not in f.relative_to(ROOT).parts]
    return files


def violations(files: list[Path], forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    found = []
    for path in files:
        for name in sorted(imported_modules(path)):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(root)} imports {name}")
    return found


def test_the_checker_flags_lazy_and_from_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import clientsx\n\ndef f():\n    from strategies.krum import krum\n")
    assert violations([src], ("strategies", "clients"), tmp_path) == [
        "m.py imports strategies.krum",
        "m.py imports strategies.krum.krum",
    ]
    assert violations([src], ("flsec_flower.app",), tmp_path) == []


@pytest.mark.parametrize(
    ("package", "exclude", "forbidden"),
    [
        ("flsec_flower", "app", ("strategies", "clients", "flsec_flower.app")),
        ("strategies", None, ("clients", "flsec_flower.app")),
        ("clients", None, ("strategies", "flsec_flower.app")),
    ],
)
def test_import_direction(package, exclude, forbidden):
    files = package_files(package, exclude)
    assert files, f"no source files found under {package}"
    assert violations(files, forbidden) == []


def test_the_assembly_layer_is_where_concrete_rules_are_known():
    app_imports = set().union(*(imported_modules(f) for f in package_files("flsec_flower/app")))
    assert any(name.startswith("strategies") for name in app_imports)
    assert any(name.startswith("clients") for name in app_imports)
