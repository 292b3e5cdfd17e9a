"""Who may import whom: every `import loralens...` of every module of the package, read with `ast` (top-level and
inside functions alike), against the layers of docs/architecture.md. A module may import its own package and any
layer below its own; never a layer above, never a peer package of its own layer."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "loralens"

# Lowest first. Packages on one line are peers: independent of each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("io",),
    ("numerics",),
    ("data", "models", "plots"),
    ("training",),
    ("analysis",),
    ("report",),
    ("inference",),
    ("pipeline",),
    ("demo",),
    ("cli",),
    ("__main__",),
]
LEVEL = {unit: level for level, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """`loralens.numerics.cka` -> `numerics`; `loralens.io` -> `io`; `loralens` -> `` (the package's face)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every loralens import in `path`, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
            # `from loralens import io` imports a unit too
            if name == "loralens":
                found += [(node.lineno, f"loralens.{a.name}") for a in node.names
                          if (PACKAGE / a.name).is_dir() or (PACKAGE / f"{a.name}.py").is_file()]
    return [(line, name) for line, name in found if name == "loralens" or name.startswith("loralens.")]


def layering_violations() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = unit_of(module_name(path))
        if source == "":
            continue
        if source not in LEVEL:
            problems.append(f"{path.relative_to(PACKAGE.parent)}: package {source!r} has no layer in LAYERS")
            continue
        for line, name in imported_modules(path):
            target = unit_of(name)
            if target in ("", source):
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}"
            if target not in LEVEL:
                problems.append(f"{where}: {target!r} has no layer")
            elif LEVEL[target] > LEVEL[source]:
                problems.append(f"{where}: a layer above {source!r}")
            elif LEVEL[target] == LEVEL[source]:
                problems.append(f"{where}: a peer of {source!r} (peers stay independent)")
    return problems


def test_every_package_has_a_layer():
    units = {unit_of(module_name(p)) for p in PACKAGE.rglob("*.py")} - {""}
    assert units <= set(LEVEL), sorted(units - set(LEVEL))


def test_no_module_imports_a_layer_above_or_a_peer():
    assert layering_violations() == []


def test_the_check_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch):
    fake = tmp_path / "loralens"
    (fake / "data").mkdir(parents=True)
    (fake / "data" / "__init__.py").write_text("")
    (fake / "data" / "x.py").write_text("def f():\n    from loralens.training import loop\n"
                                        "from ..models import runner\nfrom loralens import __version__\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert sorted(layering_violations()) == [
        "loralens/data/x.py:2 imports loralens.training: a layer above 'data'",
        "loralens/data/x.py:3 imports loralens.models: a peer of 'data' (peers stay independent)",
    ]
