"""Encoders as files: a trained run exported as ``config.json`` and ``model.safetensors``, loaded back.

An export folder holds no pickle. ``config.json`` is plain JSON: the family, its preset and
config, the data spec, the standardizer's mode, the engine settings and provenance of the run,
and the versions of the workbench, torch and numpy that wrote it. ``model.safetensors`` holds the
family's weights (keys ``model.<name>``) and the standardizer's fitted arrays
(``standardizer.mean`` / ``standardizer.std``, float64). :func:`load_encoder` rebuilds the family
the way :func:`~workbench.train.load_method` rebuilds a checkpoint — config and spec from the
file, every tensor's shape checked against what they build — and embeds windows exactly as the
run does (:func:`~workbench.runs.embed_function`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch

from workbench import __version__
from workbench.config import config_from_dict
from workbench.data.normalize import Standardizer
from workbench.data.spec import DataSpec
from workbench.errors import CheckpointError, ConfigError, DataError, WorkbenchError
from workbench.files import atomic_path, check_output_folder, write_json
from workbench.methods import get_method
from workbench.models.base import Method
from workbench.runs import embed_function
from workbench.train import load_method, resolve_device
from workbench.train.checkpoint import check_sizes

EXPORT_FORMAT = "workbench-export-1"
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
_MODEL_PREFIX = "model."
_STANDARDIZER_KEYS = ("mean", "std")
_CONFIG_KEYS = ("format", "family", "preset", "method_config", "spec", "standardizer", "train_config", "provenance")


def _export_tensors(method: Method, standardizer: Standardizer) -> dict[str, torch.Tensor]:
    """The weights and the standardizer's arrays as one flat dict of tensors that share no memory."""
    tensors = {}
    for key, value in method.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{method.name}: state {key!r} is a {type(value).__name__}, not a tensor")
        tensors[_MODEL_PREFIX + key] = value.detach().cpu().contiguous().clone()
    state = standardizer.to_dict()
    for key in _STANDARDIZER_KEYS:
        if state[key] is not None:
            tensors[f"standardizer.{key}"] = torch.from_numpy(np.asarray(getattr(standardizer, f"{key}_")).copy())
    return tensors


def _versions() -> dict[str, str]:
    return {"workbench": __version__, "torch": torch.__version__, "numpy": np.__version__}


def _check_target(out: Path, force: bool) -> None:
    check_output_folder(out, "export folder (--out)")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"export folder {out} exists and is not empty; choose a new folder or pass --force")


def export_encoder(run: str | Path, out: str | Path, force: bool = False) -> Path:
    """Write a trained run as ``out/config.json`` and ``out/model.safetensors`` (``workbench export``).

    Parameters
    ----------
    run : path
        A run folder or its ``checkpoint.pt``.
    out : path
        The export folder; created if missing.
    force : bool
        Write into a folder that already holds files (the two files are replaced).

    Returns
    -------
    pathlib.Path
        ``out``.

    Raises
    ------
    ConfigError
        ``out`` is a file, or a non-empty folder without ``force``.
    CheckpointError
        ``run`` holds no readable checkpoint.
    """
    out = Path(out)
    _check_target(out, force)
    method, standardizer, state = load_method(run, device="cpu")
    config = {
        "format": EXPORT_FORMAT,
        "family": state["method"],
        "preset": state["provenance"].get("preset"),
        "method_config": state["method_config"],
        "spec": state["spec"],
        "standardizer": {"mode": standardizer.mode},
        "train_config": state["train_config"],
        "provenance": state["provenance"],
        "versions": _versions(),
    }
    tensors = _export_tensors(method, standardizer)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        safetensors.torch.save_file(tensors, str(tmp), metadata={"format": EXPORT_FORMAT})
    write_json(out / CONFIG_NAME, config)
    return out


class ExportedEncoder:
    """A family loaded from an export folder (:func:`load_encoder`).

    Attributes
    ----------
    family : str
        The registered family.
    config : dict
        The folder's ``config.json``.
    method : Method
        The family in eval mode.
    standardizer : Standardizer
        The scaling of windows the run was trained with.
    """

    def __init__(self, method: Method, standardizer: Standardizer, config: dict[str, Any]) -> None:
        self.method, self.standardizer, self.config = method, standardizer, config
        self.family = method.name
        self._embed = embed_function(method, standardizer)

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n, T, R)`` raw windows -> ``(n, D)`` float32 embeddings (scaled as in training, no grad).

        Raises
        ------
        DataError
            ``windows`` is not a 3-D array with the ``R`` features the encoder was trained on.
        """
        windows = np.asarray(windows)
        n_features = self.method.spec.n_features
        if windows.ndim != 3 or windows.shape[2] != n_features:
            raise DataError(
                f"{self.family} encoder embeds windows of shape (n, T, {n_features}), got {windows.shape}; "
                "give time first and the features the encoder was trained on last"
            )
        return self._embed(windows)


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; pass a folder written by `workbench export`")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); export the run again") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{path} is not a workbench export ({EXPORT_FORMAT}); export the run again")
    missing = [key for key in _CONFIG_KEYS if key not in config]
    if missing:
        raise CheckpointError(f"{path} lacks the field(s) {missing}; export the run again")
    return config


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS_NAME
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; export the run again")
    try:
        return safetensors.torch.load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors reports a damaged header or buffer in several types
        raise CheckpointError(f"{path} is not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def _standardizer(config: dict[str, Any], tensors: dict[str, torch.Tensor], spec: DataSpec, where: Path):
    state = config["standardizer"]
    mode = state.get("mode") if isinstance(state, dict) else None
    arrays = {key: tensors.get(f"standardizer.{key}") for key in _STANDARDIZER_KEYS}
    values = {key: None if t is None else t.numpy().tolist() for key, t in arrays.items()}
    try:
        standardizer = Standardizer.from_dict({"mode": mode, **values})
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}; export the run again") from None
    try:
        standardizer.check_features(spec.n_features)
    except DataError:
        raise CheckpointError(
            f"{where}: standardizer.mean holds {len(values['mean'])} values but spec.n_features is "
            f"{spec.n_features}; the export is damaged or was edited: export the run again"
        ) from None
    return standardizer


def load_encoder(folder: str | Path, device: str = "cpu") -> ExportedEncoder:
    """Load an export folder written by :func:`export_encoder` (``workbench export``).

    Parameters
    ----------
    folder : path
        Holds ``config.json`` and ``model.safetensors``.
    device : str
        ``"cpu"`` (default), ``"auto"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns
    -------
    ExportedEncoder
        ``.embed(windows)``, ``.family``, ``.config``.

    Raises
    ------
    CheckpointError
        A file is missing or damaged, or a field of ``config.json`` (e.g. ``method_config.d_model``)
        builds tensors of other shapes than the stored weights.
    """
    folder = Path(folder)
    config = _read_config(folder)
    tensors = _read_tensors(folder)
    where = folder / CONFIG_NAME
    try:
        cls = get_method(config["family"])
        method_config = config_from_dict(cls.Config, config["method_config"], where=f"{where}: method_config")
        spec = DataSpec.from_dict(config["spec"])
    except WorkbenchError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    weights = {k[len(_MODEL_PREFIX) :]: t for k, t in tensors.items() if k.startswith(_MODEL_PREFIX)}
    check_sizes(cls, method_config, spec, weights, where)
    method = cls(method_config, spec)
    try:
        method.load_state_dict(weights)
    except RuntimeError as exc:
        raise CheckpointError(f"{folder / WEIGHTS_NAME} does not match the {cls.name} model: {exc}") from None
    method.to(resolve_device(device)).eval()
    return ExportedEncoder(method, _standardizer(config, tensors, spec, where), config)


__all__ = ["CONFIG_NAME", "EXPORT_FORMAT", "WEIGHTS_NAME", "ExportedEncoder", "export_encoder", "load_encoder"]
