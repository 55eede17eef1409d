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

Text from users is read defensively: a document whose anchors and aliases (``&name``, ``*name``)
would expand far beyond what is written, an alias inside its own anchor, an integer longer than
Python converts, or nesting deeper than the parser follows is refused with a :class:`ConfigError`
naming where it came from; messages quote input through :func:`excerpt`, so they stay short.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import reprlib
import sys
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter, ValidationError

from workbench.errors import ConfigError

MAX_ALIAS_EXPANSION = 100_000  # values and characters that aliases may add to a document


class _Excerpt(reprlib.Repr):
    """:mod:`reprlib` that also bounds integers (``repr`` of an integer of 5000 digits raises)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 3 * self.maxlong:
            return f"<an integer of about {int(x.bit_length() * math.log10(2)) + 1} digits>"
        return super().repr_int(x, level)


_EXCERPT = _Excerpt()
_EXCERPT.maxstring = _EXCERPT.maxlong = _EXCERPT.maxother = 200


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to at most ``limit`` characters, ``...`` marking a cut."""
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def excerpt(value: Any, limit: int = 200) -> str:
    """A ``repr`` of ``value`` of at most ``limit`` characters, for messages that quote input.

    Built by :mod:`reprlib` (a few items of a long list, the ends of a long string), so it costs
    little however large ``value`` is; control characters come out escaped.
    """
    return clip(_EXCERPT.repr(value), limit)


class _Loader(yaml.SafeLoader):
    """YAML 1.2 floats (``1e-3``, ``5E+2``), refusal of duplicate keys and of integers too long to convert."""


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
                None, None, f"duplicate key {excerpt(key)}: each key may appear once", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep)


def _bounded_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    """An integer of at most ``sys.get_int_max_str_digits()`` characters (longer ones cost quadratic time)."""
    limit = sys.get_int_max_str_digits()
    if len(node.value) > limit:
        raise yaml.constructor.ConstructorError(
            None, None, f"an integer of {len(node.value)} characters; write at most {limit} digits", node.start_mark
        )
    return loader.construct_yaml_int(node)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)
_Loader.add_constructor("tag:yaml.org,2002:int", _bounded_int)


class _Expansion:
    """Size of a YAML node graph in values and characters: as written, and with every alias written out."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.written = 0
        self.sizes: dict[int, int] = {}
        self.open: set[int] = set()

    def size(self, node: yaml.Node) -> int:
        """Values and characters under ``node`` once its aliases are written out (each node counted once)."""
        key = id(node)
        if key in self.open:
            line = node.start_mark.line + 1
            raise ConfigError(
                f"{self.where}: the alias at line {line} sits inside its own anchor (a value that contains "
                "itself); write the value out"
            )
        if key not in self.sizes:
            self.open.add(key)
            own = 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)
            self.written += own
            self.sizes[key] = own + sum(self.size(child) for child in _children(node))
            self.open.discard(key)
        return self.sizes[key]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [child for pair in node.value for child in pair]
    return []


def _check_aliases(node: yaml.Node, where: str) -> None:
    """ConfigError when anchors and aliases expand ``node`` by more than :data:`MAX_ALIAS_EXPANSION`."""
    expansion = _Expansion(where)
    expanded = expansion.size(node)
    if expanded - expansion.written > MAX_ALIAS_EXPANSION:
        raise ConfigError(
            f"{where}: its aliases (*name) repeat {expanded - expansion.written:,} values and characters, more "
            f"than the {MAX_ALIAS_EXPANSION:,} allowed; write the values out instead of repeating an anchor (&name)"
        )


def load_yaml_text(text: str, where: str = "YAML") -> Any:
    """Parse YAML with :class:`_Loader`; ConfigError naming ``where`` on a syntax error.

    Refused as well: aliases that expand the document by more than :data:`MAX_ALIAS_EXPANSION`
    values and characters, an alias inside its own anchor, integers too long to convert, and
    nesting deeper than the parser follows.
    """
    try:
        return _load_checked(text, where)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {clip(str(exc), 600)}") from None
    except RecursionError:
        raise ConfigError(f"{where} nests values too deeply to read; flatten it") from None


def _load_checked(text: str, where: str) -> Any:
    """Compose the document, check its aliases (:func:`_check_aliases`), then build its values."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_aliases(node, where)
        return loader.construct_document(node)
    finally:
        loader.dispose()


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
        raise ConfigError(
            f"{where}: {excerpt(value)} is not a plain value (finite number, string, bool, list or null)"
        ) from None
    try:
        return _ADAPTERS[kind].validate_json(text, strict=True)
    except ValidationError as exc:
        reason = clip(exc.errors()[0]["msg"].lower())
        raise ConfigError(f"{where}: {excerpt(value)} is not valid ({reason}; expected {_type_name(kind)})") from None


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
        raise ConfigError(
            f"{where}: unknown key {excerpt(unknown[0])}{_close(unknown[0], names)}; valid keys are {names}"
        )
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
            raise ConfigError(f"--set {excerpt(pair)} is not of the form key=value (e.g. --set lr=1e-3)")
        out[key.strip()] = parse_value(raw, f"--set {clip(key.strip())}")
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


__all__ = [
    "MAX_ALIAS_EXPANSION",
    "clip",
    "config_from_dict",
    "excerpt",
    "load_yaml",
    "load_yaml_text",
    "parse_overrides",
    "parse_value",
    "validate_value",
]
