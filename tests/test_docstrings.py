"""Every public function, class and public method of otpipe has a numpydoc docstring, checked by ``numpydoc.validate``.

What is checked: every module of the package is imported (``pkgutil.walk_packages``); its public names are its
``__all__``, or, without one, the names not starting with ``_`` that the module itself defines. Each public function
and class is validated once, in the module that defines it (a name re-exported by a package is checked where it is
written), and so is each public method, classmethod, staticmethod and property that a public class defines itself
(inherited members are checked in their own class; dunders, ``__init__`` included, are documented by the class
docstring, whose ``Parameters`` section numpydoc matches against the constructor's signature).

Not checked: ``otpipe.cli``, whose Click commands carry their ``--help`` text in their docstrings (help for a person
at a terminal, not API documentation). Every other module of the package is.

The error codes (``numpydoc.validate.ERROR_MSGS``), chosen as projects adopting numpydoc validation choose them
(numpy, scikit-learn, xarray run the same tool with a selected set):

- ``GL08``: the object has no docstring.
- ``SS01``, ``SS02``, ``SS03``, ``SS04``: a one-line summary is there, starts with a capital letter, ends with a
  period and has no leading whitespace (what ``help()``, IDE tooltips and the API tables show).
- ``PR01``, ``PR02``: every parameter of the signature is documented, and nothing is documented that the signature
  lacks (the checks that catch a docstring falling behind a changed signature). Private constructor fields of a
  dataclass (``_x``, internal state that callers do not pass) are not required, nor the signature of an ``Enum``;
  the fields of a dataclass may be documented under ``Attributes`` (result types read as attributes).
- ``RT01``: a function or method that returns a value has a ``Returns`` section; ``YD01``: a generator has a
  ``Yields`` section.
- ``GL06``, ``GL07``: section names are numpydoc's (a misspelt header makes its section invisible to the other
  checks) and in numpydoc's order.

Left out on purpose: ``SS05`` (infinitive verb: it misfires on summaries of classes and properties that are noun
phrases), ``SS06`` (a summary may wrap), ``ES01``/``SA01``/``EX01`` (extended summary, See Also and Examples
sections are encouraged, not required, for every helper), ``PR04``-``PR10`` and ``RT02``-``RT05`` (the punctuation
and capitalisation of each parameter description, and parameter types where the type hint states them), ``PR03``
(order of documented parameters: keyword-only groups are documented by topic).
"""
from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

numpydoc_validate = pytest.importorskip("numpydoc.validate")

import otpipe  # noqa: E402

#: the numpydoc error codes this project requires (the module docstring says why these)
CODES = frozenset({"GL08", "SS01", "SS02", "SS03", "SS04", "PR01", "PR02", "RT01", "YD01", "GL06", "GL07"})

#: packages not walked: Click commands, whose docstrings are their ``--help`` text
EXCLUDED = ("otpipe.cli",)


def _modules() -> list[ModuleType]:
    """Import and return every module of otpipe outside ``EXCLUDED`` (``__main__`` modules are not imported)."""
    found = [otpipe]
    for info in pkgutil.walk_packages(otpipe.__path__, "otpipe.", onerror=lambda name: None):
        name = info.name
        if name.startswith(tuple(p + "." for p in EXCLUDED)) or name in EXCLUDED or name.endswith(".__main__"):
            continue
        found.append(importlib.import_module(name))
    return found


def _public_names(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]


def _documentable(obj: object) -> bool:
    return inspect.isfunction(obj) or inspect.isclass(obj)


def _members(cls: type) -> list[str]:
    """Names of the public methods, classmethods, staticmethods and properties ``cls`` defines itself."""
    names = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
        if inspect.isfunction(value) or isinstance(value, property):
            names.append(name)
    return names


def _targets() -> dict[str, str]:
    """Dotted name of every object to validate -> the module that defines it."""
    targets: dict[str, str] = {}
    for module in _modules():
        for name in _public_names(module):
            obj = getattr(module, name, None)
            if not _documentable(obj):
                continue
            home = getattr(obj, "__module__", "") or ""
            if not (home == "otpipe" or home.startswith("otpipe.")) or home.startswith(EXCLUDED):
                continue
            qualname = obj.__qualname__
            if "<locals>" in qualname:
                continue
            targets[f"{home}.{qualname}"] = home
            if inspect.isclass(obj):
                for member in _members(obj):
                    targets[f"{home}.{qualname}.{member}"] = home
    return targets


def _documented_parameters(obj: object) -> list[str]:
    """Names documented under ``Parameters`` / ``Other Parameters``, and for a dataclass also under ``Attributes``."""
    # show_class_members=False: numpydoc would otherwise fill an absent Attributes section with class members
    doc = numpydoc_validate.get_doc_object(obj, config={"show_class_members": False})
    sections = ["Parameters", "Other Parameters"] + (["Attributes"] if dataclasses.is_dataclass(obj) else [])
    return [n.strip() for s in sections for item in doc[s] for n in item.name.split(",")]


def _errors(dotted: str) -> list[str]:
    """The errors of ``CODES`` in the docstring of ``dotted`` (PR01 leaves out private ``_x`` constructor fields)."""
    errors = []
    enum_class = isinstance(obj := numpydoc_validate.Validator._load_obj(dotted), type) and issubclass(obj, enum.Enum)
    for code, message in numpydoc_validate.validate(dotted)["errors"]:
        if enum_class and code in ("PR01", "PR02"):
            continue  # an Enum's signature is Enum's value lookup, not a constructor callers document
        if code == "PR01":
            documented = set(_documented_parameters(obj))
            doc = numpydoc_validate.Validator(numpydoc_validate.get_doc_object(obj))
            missing = [p for p in doc.signature_parameters
                       if p not in documented and not p.lstrip("*").startswith("_")]
            if not missing:
                continue
            message = f"Parameters {missing} not documented"
        if code in CODES:
            errors.append(f"{dotted}: {code} {message}")
    return errors


def docstring_errors() -> dict[str, list[str]]:
    """Validate every public object of otpipe (outside ``EXCLUDED``).

    Returns
    -------
    dict of str to list of str
        Module name -> the errors found in the objects it defines (modules without errors are left out).
    """
    found: dict[str, list[str]] = {}
    for dotted, home in sorted(_targets().items()):
        errors = _errors(dotted)
        if errors:
            found.setdefault(home, []).extend(errors)
    return found


def test_public_docstrings_follow_numpydoc():
    found = docstring_errors()
    lines = [e for errors in found.values() for e in errors]
    assert not lines, f"{len(lines)} numpydoc errors in {len(found)} modules:\n" + "\n".join(lines)


def test_the_check_sees_every_layer():
    homes = set(_targets().values())
    for package in ("geometry", "problems", "solvers", "tools", "store", "engine", "report"):
        assert any(h.startswith(f"otpipe.{package}.") for h in homes), package
    assert "otpipe.solvers.sinkhorn.solve" in _targets()
    assert not any(h.startswith("otpipe.cli") for h in homes)


def test_the_check_fires_on_a_bad_docstring(tmp_path, monkeypatch):
    (tmp_path / "probe_docstrings.py").write_text(
        "def f(a, b):\n"
        "    '''adds things\n\n    Parameters\n    ----------\n    a : int\n        One.\n"
        "    c : int\n        Not a parameter.\n    '''\n"
        "    return a + b\n\n\n"
        "def g(x):\n    return x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    codes = {e.split(": ")[1].split()[0] for e in _errors("probe_docstrings.f")}
    assert {"SS02", "SS03", "PR01", "PR02", "RT01"} <= codes, codes
    assert [e.split(": ")[1].split()[0] for e in _errors("probe_docstrings.g")] == ["GL08"]



def test_the_check_reads_dataclass_fields(tmp_path, monkeypatch):
    (tmp_path / "probe_dataclasses.py").write_text(
        "from dataclasses import dataclass\n\n\n"
        "@dataclass\nclass Bare:\n    '''A result.'''\n\n    value: float | None = None\n    _cache: object = None\n\n\n"
        "@dataclass\nclass Read:\n    '''A result.\n\n    Attributes\n    ----------\n    value : float or None\n"
        "        The value.\n    '''\n\n    value: float | None = None\n    _cache: object = None\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    # numpydoc's class-member autofill must not count as documentation; a private field is not required
    assert _errors("probe_dataclasses.Bare") == ["probe_dataclasses.Bare: PR01 Parameters ['value'] not documented"]
    assert _errors("probe_dataclasses.Read") == []
