"""Settings from YAML files, ``key=value`` strings and notebook parameters, validated by pydantic.

Every way a user sets a value goes through two steps:

1. **parse** the text as YAML (:func:`parse_value`): ``3`` is an int, ``1e-3`` a float (also
   without a dot, unlike YAML 1.1), ``true`` a bool, ``[0.1, 0.2]`` a list, anything else a
   string;
2. **validate** the parsed value against the declared type with pydantic in strict JSON mode
   (:func:`validate_value`): ``1`` or ``"yes"`` is not a bool, ``3.5`` is not an int, a string
   is not a number, a list is accepted where a tuple is declared and an int where a float is.

:func:`config_from_dict` applies this to the fields of a config dataclass and refuses unknown
keys, naming the valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from workbench.errors import ConfigError


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats (``1e-3``, ``5E+2``) and refusal of duplicate keys."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _no_duplicate_keys(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}: each key may appear once", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def load_yaml_text(text: str, where: str = "YAML") -> Any:
    """Parse YAML with :class:`_Loader`; ConfigError naming ``where`` on a syntax error."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}") from None


def parse_value(text: str, where: str = "value") -> Any:
    """Read one value written by a user (``--set``, ``-p``) as YAML; empty text is ``""``."""
    if not text.strip():
        return ""
    return load_yaml_text(text, where)


_ADAPTERS: dict[Any, TypeAdapter] = {}


def validate_value(value: Any, kind: Any, where: str) -> Any:
    """Check ``value`` against the type ``kind`` (strict, JSON semantics); ConfigError naming ``where``."""
    if kind not in _ADAPTERS:
        _ADAPTERS[kind] = TypeAdapter(kind)
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a plain value (number, string, bool, list or null)") from None
    try:
        return _ADAPTERS[kind].validate_json(text, strict=True)
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].lower()
        raise ConfigError(f"{where}: {value!r} is not valid ({reason}; expected {_type_name(kind)})") from None


def _type_name(kind: Any) -> str:
    return getattr(kind, "__name__", None) or str(kind).replace("typing.", "")


def _close(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def config_from_dict(cls: type, values: dict[str, Any], where: str = "config") -> Any:
    """Instantiate dataclass ``cls`` from ``values``, refusing unknown keys and wrong types.

    Raises
    ------
    ConfigError
        An unknown key (the message lists the valid keys and the closest one), a value of the
        wrong type, or a value the dataclass itself rejects in ``__post_init__``.
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}{_close(unknown[0], names)}; valid keys are {names}")
    kwargs = {key: validate_value(value, hints[key], f"{where}.{key}") for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["lr=1e-3", "depth=2"]`` -> ``{"lr": 0.001, "depth": 2}`` (values read by :func:`parse_value`)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r} is not of the form key=value (e.g. --set lr=1e-3)")
        out[key.strip()] = parse_value(raw, f"--set {key.strip()}")
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error when the file is missing or not a mapping."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read ({exc})") from None
    data = load_yaml_text(text, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of key: value")
    return data


__all__ = ["config_from_dict", "load_yaml", "load_yaml_text", "parse_overrides", "parse_value", "validate_value"]
