"""Notebook parameters: what each notebook declares, and the check of a report's values against it.

Every notebook has one cell tagged ``parameters`` of annotated literals (``name: type = value
# help``), which papermill inspects (``papermill.inspect_notebook``) and overrides by injection.
:func:`plan_parameters` gives each notebook only the parameters it declares, refuses a name that
no notebook declares, and validates every value against the declared type with the same rules
as ``--set`` (:func:`workbench.config.validate_value`: strict, so ``1`` is not a bool and
``inf`` is not an int). Values typed on the command line (``-p name=value``) are read as YAML
first (``-p k_shots=[1,4]``, ``-p training={max_steps: 2}``), except for string parameters,
which take the text as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.config import excerpt, parse_value, validate_value
from workbench.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = ("01_data_inspection", "02_masks", "03_train", "04_embeddings", "05_fewshot", "06_decoding")
_TYPES = {"int": int, "float": float, "str": str, "bool": bool, "list": list, "dict": dict}


class CliText(str):
    """A parameter value typed on the command line, not yet parsed."""


def parse_cli_params(items: list[str]) -> dict[str, CliText]:
    """``["n_episodes=100", "k_shots=[1,4]"]`` -> ``{"n_episodes": "100", ...}`` (``-p`` of the CLI)."""
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--param {excerpt(item)}: write NAME=VALUE, e.g. --param n_episodes=100")
        out[name.strip()] = CliText(value.strip())
    return out


def declared_parameters(notebook_dir: Path = NOTEBOOK_DIR) -> dict[str, dict[str, dict[str, Any]]]:
    """``{notebook: papermill.inspect_notebook(...)}`` for the report's notebooks."""
    import papermill

    missing = [nb for nb in NOTEBOOKS if not (notebook_dir / f"{nb}.ipynb").is_file()]
    if missing:
        raise ConfigError(f"{notebook_dir}: notebooks {missing} are missing; run the report from a checkout")
    return {nb: papermill.inspect_notebook(str(notebook_dir / f"{nb}.ipynb")) for nb in NOTEBOOKS}


def coerce(value: Any, type_name: str, where: str) -> Any:
    """A value for a parameter declared as ``type_name`` (ConfigError naming ``where`` otherwise)."""
    kind = _TYPES.get(type_name)
    if kind is None:
        raise ConfigError(f"parameter {where} has an undeclared type {type_name!r}; annotate it in its notebook")
    if isinstance(value, CliText):
        value = str(value) if kind is str else parse_value(value, f"parameter {where}")
    return validate_value(value, kind, f"parameter {where}")


def plan_parameters(
    values: dict[str, Any], declared: dict[str, dict[str, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    """Split report parameters over the notebooks that declare them.

    Raises
    ------
    ConfigError
        A name no notebook declares (the message lists the valid names), or a value that does not
        validate against the declared type.
    """
    valid = sorted({name for params in declared.values() for name in params})
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown report parameter(s) {', '.join(map(excerpt, unknown))}: no notebook declares them; "
            f"valid parameters are {', '.join(valid)}"
        )
    return {
        nb: {
            name: coerce(values[name], params[name]["inferred_type_name"], f"{name} of {nb}")
            for name in params
            if name in values
        }
        for nb, params in declared.items()
    }


__all__ = [
    "NOTEBOOKS",
    "NOTEBOOK_DIR",
    "CliText",
    "coerce",
    "declared_parameters",
    "parse_cli_params",
    "plan_parameters",
]
