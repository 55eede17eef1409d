"""Checkpoints: one file per run, written atomically, loaded safely, refused when another run wrote it.

A checkpoint holds tensors and plain types only (loaded with ``weights_only=True``): the
family's name, config and data spec (so :func:`load_method` rebuilds any family), the engine
settings, the provenance of the training windows, the weights, the optimiser state, where the
run stands (step, epoch, batch, finished) and its history.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from pathlib import Path
from typing import Any

import torch

from workbench.config import config_from_dict
from workbench.data.normalize import Standardizer
from workbench.data.spec import DataSpec
from workbench.errors import CheckpointError
from workbench.methods import get_method
from workbench.models.base import Method
from workbench.train.settings import resolve_device

CHECKPOINT_FORMAT = "workbench-checkpoint-2"
CHECKPOINT_NAME = "checkpoint.pt"
# engine settings that may change between a run and its resumption without changing its result
RESUMABLE_CHANGES = ("device", "checkpoint_every", "loader_workers", "monitor_every", "monitor_windows")

_REQUIRED_KEYS = {
    "format",
    "method",
    "method_config",
    "spec",
    "train_config",
    "provenance",
    "model",
    "optimizer",
    "step",
    "epoch",
    "batch_in_epoch",
    "finished",
    "standardizer",
    "subjects",
    "history",
}


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check that it is one of ours.

    Raises
    ------
    CheckpointError
        If the file is missing, not a regular file, unreadable, holds anything but tensors and
        plain types, or lacks / adds keys.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train first or pass the run folder")
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} is not a regular file (a pipe, a device or a folder); pass the file a training wrote"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(
            f"checkpoint {path} could not be loaded safely ({type(exc).__name__}: {exc}); "
            "it is corrupt or holds objects other than tensors and plain types"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a workbench checkpoint ({CHECKPOINT_FORMAT}); train it again")
    keys = set(state)
    if keys != _REQUIRED_KEYS:
        raise CheckpointError(
            f"checkpoint {path} has unexpected content: missing {sorted(_REQUIRED_KEYS - keys)}, "
            f"extra {sorted(keys - _REQUIRED_KEYS)}"
        )
    return state


def build_method(
    name: str, spec: DataSpec, preset: str | None = None, overrides: dict[str, Any] | None = None
) -> Method:
    """Instantiate a registered family from its name, the data spec, an optional preset and overrides."""
    cls = get_method(name)
    return cls(cls.make_config(preset, **(overrides or {})), spec)


def load_method(path: str | Path, device: str = "cpu") -> tuple[Method, Standardizer, dict[str, Any]]:
    """Rebuild a trained family from a checkpoint (its config and data spec are inside).

    Returns
    -------
    method, standardizer, state
        The method in eval mode on ``device``, the standardizer fitted on its training windows,
        and the raw checkpoint dict (for its config, provenance and history).
    """
    state = read_checkpoint(path)
    cls = get_method(state["method"])
    config = config_from_dict(cls.Config, state["method_config"], where=f"{path}: method_config")
    spec = DataSpec.from_dict(state["spec"])
    check_sizes(cls, config, spec, state["model"], path)
    method = cls(config, spec)
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the {state['method']} model: {exc}") from None
    method.to(resolve_device(device)).eval()
    return method, Standardizer.from_dict(state["standardizer"]), state


def _shapes(tensors: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(t.shape) for key, t in tensors.items() if isinstance(t, torch.Tensor)}


def _sizes_behind(built: tuple[int, ...], stored: tuple[int, ...], config: Any, spec: DataSpec) -> list[str]:
    """The config and spec fields whose value is a size of ``built`` that ``stored`` lacks."""
    sizes = set(built) - set(stored)
    fields = [
        f"method_config.{f.name}"
        for f in dataclasses.fields(config)
        if type(getattr(config, f.name)) is int and getattr(config, f.name) in sizes
    ]
    spec_fields = ("n_features", "n_timepoints", "n_subjects")
    return fields + [f"spec.{name}" for name in spec_fields if getattr(spec, name) in sizes]


def check_sizes(cls: type[Method], config: Any, spec: DataSpec, weights: dict[str, Any], path: str | Path) -> None:
    """Refuse a config and data spec that build other tensors than the checkpoint's weights.

    The model is built on the ``meta`` device, which allocates nothing, so a config whose sizes
    were damaged or edited (``d_model`` of two million) is refused before any memory is taken.

    Raises
    ------
    CheckpointError
        Naming the fields whose sizes disagree with the stored tensors, or the tensors that
        one side lacks.
    """
    if not isinstance(weights, dict):
        raise CheckpointError(f"checkpoint {path}: its weights are a {type(weights).__name__}, not a state dict")
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the real build below warns once
        built = _shapes(cls(config, spec).state_dict())
    stored = _shapes(weights)
    if built.keys() != stored.keys():
        raise CheckpointError(
            f"checkpoint {path}: its method_config builds tensors {sorted(built.keys() - stored.keys())[:5]} that "
            f"its weights lack, and its weights hold {sorted(stored.keys() - built.keys())[:5]} that the config does "
            "not build; the checkpoint is damaged or was edited: train it again"
        )
    # A tensor the config builds empty is sized by fitting (e.g. y-Aware's bandwidth) and loads as stored.
    wrong = [key for key in built if built[key] != stored[key] and math.prod(built[key]) > 0]
    if wrong:
        fields = sorted({f for key in wrong for f in _sizes_behind(built[key], stored[key], config, spec)})
        raise CheckpointError(
            f"checkpoint {path}: {', '.join(fields) or 'method_config'} disagree(s) with the weights: tensor "
            f"{wrong[0]!r} is {stored[wrong[0]]} in the checkpoint but the config builds {built[wrong[0]]}; the "
            "checkpoint is damaged or was edited: train it again"
        )


def _differences(saved: dict[str, Any], now: dict[str, Any], prefix: str) -> list[str]:
    keys = sorted(set(saved) | set(now))
    return [f"{prefix}{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in keys if saved.get(k) != now.get(k)]


def check_same_run(state: dict[str, Any], identity: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint written by another run, naming what differs."""
    diffs = []
    if state["method"] != identity["method"]:
        diffs.append(f"family ({state['method']!r} -> {identity['method']!r})")
    else:
        diffs += _differences(state["method_config"], identity["method_config"], "")
    diffs += _differences(state["spec"], identity["spec"], "data.")
    saved_train = {k: v for k, v in state["train_config"].items() if k not in RESUMABLE_CHANGES}
    now_train = {k: v for k, v in identity["train_config"].items() if k not in RESUMABLE_CHANGES}
    diffs += _differences(saved_train, now_train, "")
    diffs += _differences(state["provenance"], identity["provenance"], "")
    if diffs:
        raise CheckpointError(
            f"{path} was written by another run; differing: {'; '.join(diffs[:8])}"
            f"{' ...' if len(diffs) > 8 else ''}. Train into another folder (--out) or start this one "
            "again (--force-new)"
        )


__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "build_method",
    "check_same_run",
    "check_sizes",
    "load_method",
    "read_checkpoint",
]
