"""Packaging: every module otpipe imports at run time is a declared core dependency (or, for the optional
backends and cluster types, an extra imported only where used), and environment.yml lists exactly the
core dependencies of pyproject.toml, with the same lower bounds."""
from __future__ import annotations

import ast
import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
#: import name -> distribution name, where they differ and the package may not be installed here
KNOWN = {"yaml": "pyyaml", "PIL": "pillow", "sklearn": "scikit-learn", "mpl_toolkits": "matplotlib",
         "dask_cuda": "dask-cuda", "dask_jobqueue": "dask-jobqueue", "pykeops": "pykeops", "ot": "pot"}
#: conda package names that differ from the pip ones; conda-only entries that are not Python dependencies
CONDA_TO_PIP = {"pytorch": "torch"}
CONDA_ONLY = {"python", "pip", "cxx-compiler"}
#: modules that import an optional package at module level and are themselves imported only behind a guard
#: (``otpipe/geometry/backends/triton.py`` imports ``_triton_programs`` after a try/except ImportError on triton)
GUARDED_MODULES = {"otpipe/geometry/backends/_triton_programs.py"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _split(req: str) -> tuple[str, str]:
    m = re.match(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*?)\s*$", req)
    return _norm(m.group(1)), m.group(2).replace(" ", "")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _imports() -> dict[str, list[tuple[str, bool]]]:
    """Top-level module name -> [(file:line, imported at module level outside try)] over otpipe/."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for f in sorted((ROOT / "otpipe").rglob("*.py")):
        tree = ast.parse(f.read_text(), filename=str(f))
        top = {id(n) for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for n in names:
                mod = n.split(".")[0]
                if mod in sys.stdlib_module_names or mod in ("otpipe", "__future__"):
                    continue
                found.setdefault(mod, []).append((f"{f.relative_to(ROOT)}:{node.lineno}", id(node) in top))
    return found


def _distribution(mod: str) -> str:
    dists = metadata.packages_distributions().get(mod)
    return _norm(dists[0]) if dists else _norm(KNOWN.get(mod, mod))


def test_every_runtime_import_is_declared():
    proj = _pyproject()
    core = {_split(r)[0] for r in proj["dependencies"]}
    extras = {k: {_split(r)[0] for r in v} for k, v in proj["optional-dependencies"].items() if k != "test"}
    optional = set().union(*extras.values())
    imports = _imports()
    assert {"scipy", "matplotlib", "zarr", "torch"} <= set(imports)  # the audit sees lazy imports too
    missing, eager = [], []
    for mod, where in sorted(imports.items()):
        dist = _distribution(mod)
        if dist in core:
            continue
        if dist not in optional:
            missing.append(f"{mod} ({dist}) imported at {where[0][0]}")
        eager += [f"{mod} at {w}" for w, at_top in where if at_top and w.split(":")[0] not in GUARDED_MODULES]
    assert not missing, f"imported at run time but not a core dependency: {missing}"
    assert not eager, f"optional packages imported at module level: {eager}"


def test_pykeops_is_optional():
    proj = _pyproject()
    assert "pykeops" not in {_split(r)[0] for r in proj["dependencies"]}
    assert {_split(r)[0] for r in proj["optional-dependencies"]["keops"]} == {"pykeops"}


def test_environment_yml_matches_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda: dict[str, str] = {}
    for dep in env["dependencies"]:
        items = dep["pip"] if isinstance(dep, dict) else [dep]
        for item in items:
            name, spec = _split(item)
            name = CONDA_TO_PIP.get(name, name)
            if name not in CONDA_ONLY:
                conda[name] = spec
    core = dict(_split(r) for r in _pyproject()["dependencies"])
    assert set(conda) == set(core), (f"only in environment.yml: {sorted(set(conda) - set(core))}; "
                                     f"only in pyproject.toml: {sorted(set(core) - set(conda))}")
    assert conda == core, "lower bounds differ between environment.yml and pyproject.toml"
