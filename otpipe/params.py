"""Parameter schemas read from annotated signatures: the names, types, choices, ranges and defaults of
:mod:`otpipe.api`'s functions, declared once in their signatures and read by the workflow runner.

A parameter's annotation says what it takes: ``bool`` (a flag), ``int``, ``float``, ``str``,
``Literal["a", "b"]`` (a choice), ``str | os.PathLike`` (a path, read as a string), any of them ``| None``
(optional), ``Annotated[int, Range(1)]`` (a bounded
number), and lists of values: ``Annotated[Sequence[float], Listed.COMMAS]`` (one option value, comma-joined
on the command line: ``--eps 0.1,1``) or ``Annotated[Sequence[str], Listed.REPEATED]`` (the option repeated:
``--kind a --kind b``). Anything else (paths, collections, cluster specs) is not checked here.
"""
from __future__ import annotations

import enum
import inspect
import numbers
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

__all__ = ["Range", "Listed", "Param", "parameters", "convert", "REQUIRED"]

#: the default of a parameter that has none (``Param.default``)
REQUIRED = inspect.Parameter.empty


@dataclass(frozen=True)
class Range:
    """Bounds of a number parameter: ``min <= value <= max``.

    Parameters
    ----------
    min, max : float, optional
        The bounds (``None``: unbounded).
    """

    min: float | None = None
    max: float | None = None

    def check(self, value: float) -> None:
        """Raise ``ValueError`` when ``value`` is out of bounds.

        Parameters
        ----------
        value : float
            The number to check.
        """
        if self.min is not None and value < self.min:
            raise ValueError(f"must be >= {self.min:g}, got {value!r}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be <= {self.max:g}, got {value!r}")


class Listed(enum.Enum):
    """How the command line spells a list of values: comma-joined in one option, or the option repeated."""

    COMMAS = "commas"
    REPEATED = "repeated"


@dataclass(frozen=True)
class Param:
    """One keyword parameter of an API function, as its annotation and default declare it.

    Parameters
    ----------
    name : str
        The parameter's name (the command line's long option without dashes).
    kind : {"bool", "int", "float", "str", "choice", "any"}
        What one value is (``"any"``: not checked).
    default : object
        The default, or :data:`REQUIRED`.
    optional : bool
        Whether the annotation allows ``None``.
    choices : tuple of str
        The allowed values of a ``"choice"``.
    range : Range, optional
        Bounds of a number.
    listed : Listed, optional
        Set when the parameter takes a list of such values (and how the command line spells it).
    """

    name: str
    kind: str
    default: Any = REQUIRED
    optional: bool = False
    choices: tuple[str, ...] = ()
    range: Range | None = None
    listed: Listed | None = None

    @property
    def required(self) -> bool:
        """Whether the parameter has no default."""
        return self.default is REQUIRED

    @property
    def flag(self) -> str:
        """The command line's long option of this parameter (``n_measures`` -> ``--n-measures``)."""
        return "--" + self.name.replace("_", "-")

    def type_name(self) -> str:
        """A short description of the accepted values, for error messages.

        Returns
        -------
        str
            E.g. ``"an integer"`` or ``"a list of values, each a number"``.
        """
        one = {"bool": "true or false", "int": "an integer", "float": "a number", "str": "a string",
               "choice": "one of " + ", ".join(self.choices), "any": "a value"}[self.kind]
        return f"a list of values, each {one}" if self.listed else one


def _unwrap(hint) -> tuple[Any, tuple]:
    if typing.get_origin(hint) is Annotated:
        base, *extras = typing.get_args(hint)
        return base, tuple(extras)
    return hint, ()


def _describe(name: str, hint, default) -> Param:
    hint, extras = _unwrap(hint)
    rng = next((e for e in extras if isinstance(e, Range)), None)
    listed = next((e for e in extras if isinstance(e, Listed)), None)
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0] if len(args) == 1 else str if str in args else Any  # str | os.PathLike: a path
    if listed is not None:
        args = typing.get_args(hint)
        hint = args[0] if args else Any
    choices: tuple[str, ...] = ()
    if typing.get_origin(hint) is Literal:
        kind, choices = "choice", tuple(str(c) for c in typing.get_args(hint))
    else:
        kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(hint, "any")
    return Param(name, kind, default, optional, choices, rng, listed)


def parameters(fn: Callable) -> dict[str, Param]:
    """The keyword parameters of ``fn`` as :class:`Param` s, read from its annotations and defaults.

    Parameters
    ----------
    fn : callable
        A function whose annotations use the forms of this module's docstring.

    Returns
    -------
    dict
        ``{name: Param}`` in signature order (``*args`` and ``**kwargs`` left out).
    """
    hints = typing.get_type_hints(fn, include_extras=True)
    out = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = _describe(p.name, hints.get(p.name, Any), p.default)
    return out


def _one(p: Param, value):
    if p.kind == "any":
        return value
    if value is None or isinstance(value, (dict, list, tuple)):
        raise ValueError(f"expected {p.type_name()}, got {value!r}")
    if p.kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected {p.type_name()}, got {value!r}")
    if p.kind == "str":
        return str(value)
    if p.kind == "choice":
        if str(value) not in p.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(p.choices)}")
        return str(value)
    if p.kind == "int":
        if isinstance(value, numbers.Integral):
            v = int(value)
        elif isinstance(value, numbers.Real) and float(value).is_integer():
            v = int(value)
        else:
            try:
                v = int(str(value).strip())
            except ValueError:
                raise ValueError(f"{value!r} is not a valid integer") from None
    else:
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not a valid number") from None
    if p.range is not None:
        p.range.check(v)
    return v


def convert(p: Param, value):
    """``value`` (as read from YAML or JSON) converted to what the parameter ``p`` takes.

    Parameters
    ----------
    p : Param
        The parameter.
    value : object
        A scalar, or for a listed parameter a list of scalars or a comma-separated string.

    Returns
    -------
    object
        The converted value: a ``bool``, ``int``, ``float`` or ``str``, or a list of them.

    Raises
    ------
    ValueError
        The value does not fit, with a short message naming the value.
    """
    if p.listed is None:
        return _one(p, value)
    if isinstance(value, str) and p.listed is Listed.COMMAS:
        values: Sequence = [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(value, (list, tuple)):
        values = value
    else:
        values = [value]
    return [_one(p, v) for v in values]
