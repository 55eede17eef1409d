"""Checkpoints: one file per run, written atomically, loaded safely, refused when another run wrote it.

A checkpoint holds tensors and plain types only (loaded with ``weights_only=True``): the
family's name, config and data spec (so :func:`load_method` rebuilds any family), the engine
settings, the provenance of the training windows, the weights, the optimiser state, where the
run stands (step, epoch, batch, finished) and its history.
"""

from __future__ import annotations

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
        If the file is missing, unreadable, holds anything but tensors and plain types, or lacks
        / adds keys.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist; train first or pass the run folder")
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
    method = cls(config, DataSpec.from_dict(state["spec"]))
    try:
        method.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path} does not match the {state['method']} model: {exc}") from None
    method.to(resolve_device(device)).eval()
    return method, Standardizer.from_dict(state["standardizer"]), state


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
    "load_method",
    "read_checkpoint",
]
