"""Command-line flags generated from dataclass fields, so an option is declared once.

Each field becomes ``--field-name`` (its type from the annotation, its help from
``field(metadata={"help": ...})``). Metadata keys understood:

- ``help``: the help text; the field's default is appended;
- ``flag``: another flag name (``"--out"`` for ``out_dir``);
- ``name``: the flag's stem after the prefix (``"cfg"``: ``--endpoint-cfg`` for ``cfg_strength`` with
  prefix ``endpoint_``); the destination stays prefix + field name;
- ``choices``, ``nargs``: as argparse's;
- ``store_true``: a boolean flag without its ``--no-`` form (for ``--no-caption``-like fields);
- ``cli``: False to leave the field off the command line;
- ``parse``: a function turning the collected strings into the field's value (with ``append``);
- ``append``: the flag may be repeated and its values are collected in a list;
- ``required``: the flag must be given;
- ``metavar``: as argparse's.

Booleans get ``--x/--no-x``; tuples of numbers take several values (``nargs="*"``). Every flag
defaults to None, meaning "not given": :func:`values_from_args` returns only the given ones, so
the dataclass's own defaults (and whatever its ``__post_init__`` derives from them) stay the
single source of defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def _unwrap_optional(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        if str in args:
            return str
        if Path in args:
            return Path
    return tp


def _default_text(f: dataclasses.Field, shown: Any = None) -> str:
    if shown is not None:
        value = getattr(shown, f.name)
    elif f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = f.default_factory()  # type: ignore[misc]
    else:
        return ""
    if value is None or (isinstance(value, (dict, list, tuple)) and not value):
        return ""
    if isinstance(value, tuple):
        value = " ".join(str(v) for v in value)
    return f" (default: {value})"


def flag_name(f: dataclasses.Field, prefix: str = "") -> str:
    return f.metadata.get("flag") or "--" + (prefix + f.metadata.get("name", f.name)).replace("_", "-")


def add_dataclass_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    prefix: str = "",
    help_overrides: Mapping[str, str] | None = None,
    skip: tuple[str, ...] = (),
    shown_defaults: Any = None,
    with_defaults: bool = False,
) -> list[str]:
    """Add one flag per field of dataclass ``cls``; returns the destinations added. ``shown_defaults``:
    an instance of ``cls`` whose values the help gives as defaults (when the caller's defaults are
    not the class's, e.g. a field whose default is ``cls(weight=1.0)``). ``with_defaults``: the flags
    default to the fields' defaults instead of None (for commands whose code reads the namespace)."""
    hints = typing.get_type_hints(cls)
    dests: list[str] = []
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.metadata.get("cli", True) or dataclasses.is_dataclass(hints[f.name]):
            continue
        tp = _unwrap_optional(hints[f.name])
        origin = typing.get_origin(tp)
        help_text = (help_overrides or {}).get(f.name) or f.metadata.get("help", "")
        dest = prefix + f.name
        if not f.metadata.get("store_true"):  # a switch's default is being off
            help_text += _default_text(f, shown_defaults)
        kwargs: dict[str, Any] = dict(dest=dest, default=None, help=help_text)
        if with_defaults and f.default is not dataclasses.MISSING:
            kwargs["default"] = f.default
        if "metavar" in f.metadata:
            kwargs["metavar"] = f.metadata["metavar"]
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        if f.metadata.get("required"):
            kwargs["required"] = True
        if f.metadata.get("append"):
            kwargs.update(action="append", type=str)
        elif tp is bool:
            kwargs["action"] = (
                "store_true" if f.metadata.get("store_true") else argparse.BooleanOptionalAction
            )
        elif origin is tuple:
            item = typing.get_args(tp)[0]
            kwargs.update(nargs=f.metadata.get("nargs", "*"), type=item)
        elif tp in (int, float, str, Path):
            kwargs["type"] = tp
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for type {tp}")
        parser.add_argument(flag_name(f, prefix), **kwargs)
        dests.append(dest)
    return dests


def values_from_args(cls: type, args: argparse.Namespace, *, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` given on the command line (flags left at None are omitted)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        value = getattr(args, prefix + f.name, None)
        if value is None:
            continue
        parse: Callable[[Any], Any] | None = f.metadata.get("parse")
        out[f.name] = parse(value) if parse is not None else value
    return out


__all__ = ["add_dataclass_arguments", "flag_name", "values_from_args"]
