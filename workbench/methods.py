"""The registry of families: names to :class:`~workbench.models.base.Method` classes."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from workbench.errors import ConfigError

if TYPE_CHECKING:  # the registry itself needs no torch, so `workbench data` starts fast
    from workbench.models.base import Method

_FAMILIES: dict[str, str] = {
    "fewshot": "workbench.models.fewshot:FewShot",
    "jepa": "workbench.models.jepa:BrainJEPA",
    "lfr": "workbench.models.lfr:LFR",
    "yaware": "workbench.models.yaware:YAware",
    "recvae": "workbench.models.recvae:RecVAE",
}


def available() -> list[str]:
    """Names of the registered families."""
    return sorted(_FAMILIES)


def get_method(name: str) -> type[Method]:
    """Return the Method class registered under ``name``.

    Raises
    ------
    ConfigError
        If ``name`` is not registered; the message lists the choices.
    """
    if name not in _FAMILIES:
        raise ConfigError(f"unknown family {name!r}; choose one of {available()}")
    module_name, cls_name = _FAMILIES[name].split(":")
    return getattr(importlib.import_module(module_name), cls_name)


__all__ = ["available", "get_method"]
