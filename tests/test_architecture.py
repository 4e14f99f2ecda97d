"""The package's floors beyond what import-linter checks (its contracts are in pyproject.toml and run by the test
command): no module uses a private name (``_x``) of another otpipe module, neither imported (``from m import _x``)
nor reached through a module alias (``m._x``)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "otpipe"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _uses_of_private_names(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    here = _module_name(path)
    aliases: dict[str, str] = {}  # local name -> otpipe module it is bound to
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("otpipe"):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                if (PACKAGE.parent / Path(*full.split("."))).with_suffix(".py").exists() or \
                        (PACKAGE.parent / Path(*full.split(".")) / "__init__.py").exists():
                    aliases[a.asname or a.name] = full  # a module imported by name
                elif _private(a.name) and node.module != here:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: from {node.module} import {a.name}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("otpipe") and a.asname:
                    aliases[a.asname] = a.name
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases \
                and _private(node.attr) and aliases[node.value.id] != here:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {aliases[node.value.id]}.{node.attr}")
    return found


def test_no_private_name_crosses_a_module():
    found = [u for f in sorted(PACKAGE.rglob("*.py")) for u in _uses_of_private_names(f)]
    assert not found, "private names used across modules (give them a public name):\n" + "\n".join(found)


def test_the_check_sees_a_private_import(tmp_path):
    bad = PACKAGE / "engine" / "_probe_for_test_architecture.py"
    try:
        bad.write_text("from otpipe.solvers.loop import _x\nfrom otpipe.tools import barycenters as b\nb._y\n")
        found = _uses_of_private_names(bad)
    finally:
        bad.unlink()
    assert len(found) == 2 and "import _x" in found[0] and "barycenters._y" in found[1], found
