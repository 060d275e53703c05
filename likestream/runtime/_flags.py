"""One CLI flag per setting, its help taken from the setting's docstring.

The docstrings under the fields of :class:`~._settings.Settings` are the one description of
each setting (pydantic reads them: ``use_attribute_docstrings``); the flag's help is that
text without reST markup, then the environment variable and the default, e.g.
``Per-user like rate, tokens per second. [env LIKESTREAM_RATE, default 5.0]``. Secrets show
no default and say to prefer the variable: a flag's value is visible in ``ps``.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from pydantic.fields import FieldInfo

from likestream.config._settings import ENV_PREFIX, Settings

__all__ = ["SETTING_PREFIX", "add_setting_flags", "describe", "setting_help", "settings_given"]

SETTING_PREFIX = "setting_"
"""Prefix of the argparse ``dest`` of every setting flag."""

_LITERAL = re.compile(r"``([^`]+)``")


def describe(name: str) -> str:
    """The docstring of setting ``name`` on one line, reST literals as plain text."""
    text = Settings.model_fields[name].description or ""
    return " ".join(_LITERAL.sub(r"\1", text).split())


def _options(annotation: Any) -> tuple[Any, ...]:
    """The types an annotation allows, ``None`` left out (``X | None`` is ``X``)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(a for a in typing.get_args(annotation) if a is not type(None))
    return (annotation,)


def _secret(field: FieldInfo) -> bool:
    return SecretStr in _options(field.annotation)


def _metavar(field: FieldInfo) -> str:
    kind = _options(field.annotation)[0]
    if typing.get_origin(kind) is Literal:
        return "{" + ",".join(str(v) for v in typing.get_args(kind)) + "}"
    names = {bool: "{true,false}", int: "N", float: "X", Path: "PATH", SecretStr: "SECRET"}
    return names.get(kind, "TEXT")


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    return str(value)


def setting_help(name: str) -> str:
    """The help of setting ``name``'s flag (argparse escapes: ``%`` doubled)."""
    field = Settings.model_fields[name]
    env = ENV_PREFIX + name.upper()
    if _secret(field):
        tail = f"[env {env}; prefer it to this flag, whose value ps shows]"
    else:
        tail = f"[env {env}, default {_default(field)}]"
    return f"{describe(name)} {tail}".replace("%", "%%")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """``--<name>`` for every setting; a flag given wins over the environment. Call it
    after the parser's own arguments: its usage line shows those, and the settings as one
    ``[--SETTING VALUE ...]`` rather than sixty."""
    own = parser.format_usage().strip().removeprefix("usage:").strip()
    parser.usage = f"{own} [--SETTING VALUE ...]".replace("%", "%%")
    group = parser.add_argument_group(
        "settings", "Each is also an environment variable (in brackets); a flag wins over it."
    )
    for name, field in Settings.model_fields.items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            dest=SETTING_PREFIX + name,
            metavar=_metavar(field),
            help=setting_help(name),
        )


def settings_given(args: argparse.Namespace) -> dict[str, Any]:
    """The settings flags of ``args`` by setting name (None where not given)."""
    return {
        k.removeprefix(SETTING_PREFIX): v
        for k, v in vars(args).items()
        if k.startswith(SETTING_PREFIX)
    }
