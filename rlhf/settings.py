"""Typed settings: values from ``--set key=value`` and TOML files converted to a config dataclass's declared field
types before any work starts, with one-line errors naming the key, the value and what was expected; and the
fields' own docstrings, which ``docs/config.md`` is generated from.

A value is never silently corrected: ``num_epochs="abc"`` or ``num_epochs=2.5`` is refused, not coerced.
"""
from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import tomllib
import types
import typing
from collections.abc import Mapping
from typing import Any


class SettingError(ValueError):
    """A setting that cannot be used; the message names the key, the value and what is allowed."""


def parse_value(text: str) -> Any:
    """A ``--set`` value as TOML reads it (numbers, booleans, lists, quoted strings); bare words stay strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(item: str) -> tuple[str, Any]:
    """``key=value`` -> (key, parsed value)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise SettingError(f"--set {item!r} is not key=value (e.g. --set ddpo.num_epochs=30)")
    return key.strip(), parse_value(text.strip())


def describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        kinds = [describe(a) for a in args if a is not type(None)]
        return " or ".join(kinds) + (" (empty for none)" if type(None) in args else "")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {describe(args[0])}s"
        return f"a list of {len(args)} values ({', '.join(describe(a) for a in args)})"
    if origin is list:
        return f"a list of {describe(args[0])}s"
    if origin is dict:
        return "a table (e.g. {num_epochs = 30})"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(tp, str(tp))


def convert(value: Any, tp: Any, key: str) -> Any:
    """``value`` as type ``tp`` (a field annotation), or a SettingError naming ``key``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and value in (None, ""):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return convert(value, inner, key)
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
    }.get(tp)
    if ok:
        return float(value) if tp is float else value
    if ok is None and origin in (tuple, list) and isinstance(value, (list, tuple)):
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            items = [convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
            return items if origin is list else tuple(items)
        if len(value) == len(args):
            return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if ok is None and origin is dict and isinstance(value, Mapping):
        return dict(value)
    raise SettingError(f"{key}={value!r}: expected {describe(tp)}")


def coerce(cls: type, values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``values`` with every key checked against ``cls``'s fields and every value converted to its field's type."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    out = {}
    for key, value in values.items():
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"known: {', '.join(names)}"
            raise SettingError(f"unknown setting '{prefix}{key}'; {hint}")
        out[key] = convert(value, hints[key], prefix + key)
    return out


def out_of_range(obj: Any, at_least: Mapping[str, float] = {}, above: Mapping[str, float] = {},
                 one_of: Mapping[str, tuple] = {}) -> list[str]:
    """One problem line per field of ``obj`` outside its bound: ``>= at_least[name]``, ``> above[name]``, or in
    ``one_of[name]``."""
    problems = []
    for name, low in at_least.items():
        if getattr(obj, name) < low:
            problems.append(f"{name}={getattr(obj, name)!r} must be >= {low:g}")
    for name, low in above.items():
        if getattr(obj, name) <= low:
            problems.append(f"{name}={getattr(obj, name)!r} must be > {low:g}")
    for name, allowed in one_of.items():
        if getattr(obj, name) not in allowed:
            problems.append(f"{name}={getattr(obj, name)!r}: choose one of {', '.join(map(repr, allowed))}")
    return problems


def field_docs(cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal written under it), as one line; '' where it has none. A subclass's
    new fields follow its bases', whose docstrings stand for the fields it gives other defaults."""
    docs = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        body = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0].body
        for node, after in zip(body, body[1:] + [None]):
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                is_doc = isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
                if not docs.get(node.target.id):
                    docs[node.target.id] = " ".join(after.value.value.split()) if is_doc else ""
    return docs
