"""The parameter language of the report notebooks and the check of a run's parameters.

Notebook parameters are plain literals (papermill injects them), so lists and pairs are
strings: ``windows = "20,40,80"``, ``presets = "jepa:small"``, ``steps = "fewshot:150"``.
:func:`split_list` and :func:`parse_methods` read them; :func:`method_factories` turns the
training parameters into encoder factories, the same way in every notebook, so the
training, embedding and few-shot notebooks share their cached runs.

:func:`plan_parameters` checks a report's values against what the notebooks declare
(``papermill.inspect_notebook``) and gives each notebook only its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("01_data_inspection", "02_masks", "03_train", "04_embeddings", "05_fewshot")


def split_list(text: str, kind: type = str, name: str = "value") -> list:
    """``"20, 40,80"`` -> ``[20, 40, 80]``; empty items are ignored.

    Raises
    ------
    ConfigError
        An item that is not a ``kind`` (the message names the parameter ``name``).
    """
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise ConfigError(f"parameter {name}={text!r}: every comma-separated item must be a {kind.__name__}") from None


def parse_pairs(text: str, name: str = "presets") -> dict[str, str]:
    """``"jepa:small, fewshot:tiny"`` -> ``{"jepa": "small", "fewshot": "tiny"}``.

    ``method=value`` is accepted too, but ``:`` is the spelling of the notebooks' parameter
    cells: papermill cannot read a parameter line holding a second ``=``.

    Raises
    ------
    ConfigError
        An item without a separator, or a method named twice.
    """
    pairs: dict[str, str] = {}
    for item in split_list(text, str, name):
        key, sep, value = (part.strip() for part in item.replace("=", ":", 1).partition(":"))
        if not sep or not key or not value:
            raise ConfigError(f"parameter {name}={text!r}: write method:value pairs such as 'jepa:small'")
        if key in pairs:
            raise ConfigError(f"parameter {name}={text!r} names {key!r} twice")
        pairs[key] = value
    return pairs


def parse_methods(methods: str, presets: str = "", steps: str = "") -> dict[str, dict[str, Any]]:
    """Check a report's method parameters against the registry.

    Parameters
    ----------
    methods : str
        Comma list of registered families, e.g. ``"fewshot,jepa"``.
    presets : str
        ``method:preset`` pairs; methods not listed use their defaults.
    steps : str
        ``method:max_steps`` pairs capping the optimiser steps of one training.

    Returns
    -------
    dict
        ``{method: {"preset": str | None, "max_steps": int | None}}`` in the given order.

    Raises
    ------
    ConfigError
        Unknown methods or presets (with the valid names), malformed pairs.
    """
    from workbench.methods import available, get_method

    names = split_list(methods, str, "methods")
    if not names:
        raise ConfigError(f"parameter methods={methods!r} names no method; choose among {available()}")
    preset_of, steps_of = parse_pairs(presets, "presets"), parse_pairs(steps, "steps")
    for key in [*names, *preset_of, *steps_of]:
        get_method(key)  # ConfigError listing the registered families
    out: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(names):
        preset = preset_of.get(name)
        if preset is not None and preset not in get_method(name).presets:
            raise ConfigError(
                f"parameter presets: {name!r} has no preset {preset!r}; "
                f"choose one of {sorted(get_method(name).presets)}"
            )
        cap = split_list(steps_of[name], int, "steps")[0] if name in steps_of else None
        out[name] = {"preset": preset, "max_steps": cap}
    return out


def method_factories(
    methods: str,
    presets: str = "",
    steps: str = "",
    run_root: str | Path = "runs",
    epochs: int = 0,
    max_steps: int = 0,
    batch_size: int = 0,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Trained-encoder factories for the notebooks, one per method.

    ``epochs``, ``max_steps`` and ``batch_size`` of 0 keep the family's defaults; a
    ``steps`` pair overrides ``max_steps`` for its method. Two notebooks that call this with
    the same values get the same run folders under ``run_root`` (see
    :class:`workbench.pipeline.TrainedFactory`), so a finished training is reused.

    Returns
    -------
    dict
        ``{method: TrainedFactory}``.
    """
    from workbench.pipeline import encoder_factory

    factories = {}
    for name, spec in parse_methods(methods, presets, steps).items():
        train: dict[str, Any] = {}
        if epochs:
            train["epochs"] = int(epochs)
        if batch_size:
            train["batch_size"] = int(batch_size)
        cap = spec["max_steps"] if spec["max_steps"] is not None else int(max_steps)
        if cap:
            train["max_steps"] = cap
        factories[name] = encoder_factory(
            name, preset=spec["preset"], train_overrides=train, run_root=Path(run_root),
            device=device, seed=seed, progress=progress,
        )  # fmt: skip
    return factories


def untrained_factories(methods: str, presets: str = "", device: str = "auto", seed: int = 0) -> dict[str, Any]:
    """``{"<method>-untrained": factory}``: the same encoders, randomly initialised from ``seed``."""
    from workbench.pipeline import untrained_factory

    return {
        f"{name}-untrained": untrained_factory(name, spec["preset"], seed=seed, device=device)
        for name, spec in parse_methods(methods, presets).items()
    }


def parse_cli_params(items: list[str]) -> dict[str, str]:
    """``["epochs=3", "k_shots=1,4"]`` -> ``{"epochs": "3", "k_shots": "1,4"}`` (``--param`` of the CLI).

    Values stay strings; :func:`run_report` converts them to the types the notebooks declare.
    """
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--param {item!r}: write NAME=VALUE, e.g. --param n_episodes=100")
        out[name.strip()] = value.strip()
    return out


def declared_parameters(notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, dict[str, dict[str, Any]]]:
    """``{notebook: papermill.inspect_notebook(...)}`` for the five notebooks."""
    import papermill

    missing = [nb for nb in NOTEBOOKS if not (notebook_dir / f"{nb}.ipynb").is_file()]
    if missing:
        raise ConfigError(f"{notebook_dir}: notebooks {missing} are missing; run the report from a checkout")
    return {nb: papermill.inspect_notebook(str(notebook_dir / f"{nb}.ipynb")) for nb in NOTEBOOKS}


_TRUE, _FALSE = {"true", "1", "yes", "on"}, {"false", "0", "no", "off"}


def _coerce(value: Any, type_name: str, where: str) -> Any:
    """Convert a CLI string (or a Python value) to the notebook's declared type."""
    kinds = {"int": int, "float": float, "str": str, "bool": bool}
    kind = kinds.get(type_name)
    if kind is None or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    if kind is bool and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    try:
        if kind is int and isinstance(value, (str, float)) and float(value) == int(float(value)):
            return int(float(value))
        if kind in (float, str) and not isinstance(value, bool):
            return kind(value)
    except ValueError:
        pass
    raise ConfigError(f"parameter {where} expects {type_name}, got {value!r}")


def plan_parameters(
    values: dict[str, Any], declared: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Split report parameters over the notebooks that declare them.

    Raises
    ------
    ConfigError
        A name no notebook declares (the message lists the valid names), or a value that
        cannot be converted to the declared type.
    """
    valid = sorted({name for params in declared.values() for name in params})
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown report parameter(s) {', '.join(map(repr, unknown))}: no notebook declares them; "
            f"valid parameters are {', '.join(valid)}"
        )
    plan = {}
    for nb, params in declared.items():
        plan[nb] = {
            name: _coerce(values[name], params[name]["inferred_type_name"], f"{name} of {nb}")
            for name in params if name in values
        }  # fmt: skip
    return plan


__all__ = [
    "NOTEBOOKS",
    "NOTEBOOK_DIR",
    "declared_parameters",
    "method_factories",
    "parse_cli_params",
    "parse_methods",
    "parse_pairs",
    "plan_parameters",
    "split_list",
    "untrained_factories",
]
