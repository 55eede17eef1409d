"""Optional TensorBoard logging of a training (``log: [tensorboard]``, ``workbench train --log tensorboard``).

The engine writes, with :class:`torch.utils.tensorboard.SummaryWriter`, into
``<run folder>/tensorboard/`` (the main process alone under ``torchrun``):

* ``train/<key>`` after every optimiser step: the loss, its terms, ``lr``, ``weight_decay`` and
  ``grad_norm`` (what the step's ``history.json`` entry holds);
* ``monitor/<key>`` at every learning-monitor record (:mod:`workbench.train.monitor`): the
  monitor loss, its floor, the family's scalars, the centred ``rankme``, ``spread`` and
  ``offset_ratio``;
* at the end, the embedding projector of the monitor batch (tag ``monitor``, metadata columns
  ``subject`` and the batch's window labels) and the hyper-parameters (the family, its config and
  the engine's scalar settings) with the final training loss ``hparams/final_loss`` and the
  last monitor record's ``hparams/monitor_loss`` and ``hparams/rankme`` as metrics.

A resumed run appends a new event file to the same folder; it starts with a purge marker at the
step after its checkpoint, so TensorBoard hides what the interrupted process had logged past the
checkpoint and shows every step once. A run started again in the same folder (``--force-new``)
hides the earlier events the same way.

TensorBoard is imported only when a training asks for it; without it installed that training is
refused with a :class:`~workbench.errors.ConfigError` before its first step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.data.windows import WindowSet
from workbench.errors import ConfigError
from workbench.models.base import Method

TENSORBOARD_DIR = "tensorboard"
INSTALL_HINT = "pip install fmri-workbench[tensorboard]"
PROJECTOR_TAG = "monitor"
_NOT_SCALARS = ("step", "epoch")  # history keys that are the axis, not a curve


class TrainingLog:
    """Where a training logs besides ``history.json``: here nowhere (the default, which costs nothing)."""

    def step(self, entry: dict[str, float]) -> None:
        """Log one optimiser step's history entry."""

    def monitor(self, record: dict[str, float]) -> None:
        """Log one learning-monitor record."""

    def finish(self, method: Method, history: dict[str, Any], train_config: dict[str, Any]) -> None:
        """Log what only the end of a training knows: the projector and the hyper-parameters."""

    def close(self) -> None:
        """Write out what is buffered and release the files."""


@dataclass
class Monitored:
    """The learning monitor's fixed batch (``None`` when the monitor is off), its windows and how to embed it."""

    batch: dict[str, torch.Tensor] | None
    windows: WindowSet
    autocast: Any
    device: torch.device


class TensorBoardLog(TrainingLog):
    """A :class:`TrainingLog` into a TensorBoard event folder.

    Parameters
    ----------
    folder : path
        The event folder, ``<run folder>/tensorboard``.
    first_step : int
        The first step this process logs: events of earlier processes from this step on are hidden.
    monitor : Monitored
        The monitor batch of the projector and how to embed it.
    """

    def __init__(self, folder: Path, first_step: int, monitor: Monitored) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=first_step)
        self.monitored = monitor

    def step(self, entry: dict[str, float]) -> None:
        self._scalars("train", entry, int(entry["step"]))

    def monitor(self, record: dict[str, float]) -> None:
        self._scalars("monitor", record, int(record["step"]))
        self.writer.flush()

    def finish(self, method: Method, history: dict[str, Any], train_config: dict[str, Any]) -> None:
        step = history["step"][-1]["step"] if history["step"] else 0
        if self.monitored.batch is not None:
            self._projector(method, step)
        self._hparams(method, history, train_config, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()

    def _scalars(self, group: str, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            if key not in _NOT_SCALARS:
                self.writer.add_scalar(f"{group}/{key}", value, step)

    def _projector(self, method: Method, step: int) -> None:
        monitored = self.monitored
        embeddings = embed_batch(method, monitored.batch, monitored.autocast, monitored.device)
        header, rows = projector_metadata(monitored.batch, monitored.windows.subjects, monitored.windows.label_columns)
        metadata = [row[0] for row in rows] if len(header) == 1 else rows
        self.writer.add_embedding(
            embeddings,
            metadata=metadata,
            metadata_header=header if len(header) > 1 else None,
            global_step=step,
            tag=PROJECTOR_TAG,
        )

    def _hparams(self, method: Method, history: dict[str, Any], train_config: dict[str, Any], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        metrics = final_metrics(history)
        settings = {"family": method.name}
        settings.update({f"{method.name}.{k}": v for k, v in method.config_dict().items()})
        settings.update({f"train.{k}": v for k, v in train_config.items()})
        experiment, start, end = hparams(hparam_values(settings), metrics)
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary, step)
        for tag, value in metrics.items():
            self.writer.add_scalar(tag, value, step)


def open_training_log(
    names: tuple[str, ...], run_folder: Path, main: bool, first_step: int, monitor: Monitored
) -> TrainingLog:
    """The log a training writes besides its history: TensorBoard when ``names`` asks for it, on the main process.

    Raises
    ------
    ConfigError
        TensorBoard was asked for but is not installed (the message says how to install it).
    """
    if "tensorboard" not in names or not main:
        return TrainingLog()
    try:
        return TensorBoardLog(run_folder / TENSORBOARD_DIR, first_step, monitor)
    except ImportError:
        raise ConfigError(
            f"train config: log={list(names)} needs TensorBoard, which is not installed; run `{INSTALL_HINT}` "
            "(or drop tensorboard from log)"
        ) from None


def embed_batch(method: Method, batch: dict[str, torch.Tensor], autocast: Any, device: torch.device) -> np.ndarray:
    """The method's embeddings of ``batch["x"]``, in eval mode without gradients, as float32 ``(B, D)``."""
    was_training = method.training
    method.eval()
    try:
        with torch.no_grad(), autocast:
            return method.embed(batch["x"].to(device)).float().cpu().numpy()
    finally:
        method.train(was_training)


def projector_metadata(
    batch: dict[str, torch.Tensor], subjects: list[str], label_columns: tuple = ()
) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the projector's metadata: the subject of each window, then its labels.

    Categorical labels are written as their category, continuous ones as numbers; an undefined
    label (NaN) as an empty field.
    """
    header = ["subject"] + [column.name for column in label_columns]
    rows = [[subjects[int(code)]] for code in batch["subject"]]
    if label_columns:
        for row, values in zip(rows, batch["y"].tolist(), strict=True):
            row.extend(_label_text(column, value) for column, value in zip(label_columns, values, strict=True))
    return header, rows


def _label_text(column, value: float) -> str:
    if math.isnan(value):
        return ""
    return column.categories[int(value)] if column.kind == "categorical" else f"{value:.6g}"


def final_metrics(history: dict[str, Any]) -> dict[str, float]:
    """The hyper-parameter metrics: the last step's loss, and the last monitor record's loss and RankMe."""
    metrics = {"hparams/final_loss": history["step"][-1]["loss"] if history["step"] else math.nan}
    if history.get("monitor"):
        last = history["monitor"][-1]
        metrics.update({"hparams/monitor_loss": last["loss"], "hparams/rankme": last["rankme"]})
    return metrics


def hparam_values(settings: dict[str, Any]) -> dict[str, bool | int | float | str]:
    """Settings as TensorBoard hyper-parameters: numbers, booleans and text kept, anything else as text."""
    return {
        key: value if isinstance(value, bool | int | float | str) else str(value) for key, value in settings.items()
    }


__all__ = [
    "INSTALL_HINT",
    "Monitored",
    "PROJECTOR_TAG",
    "TENSORBOARD_DIR",
    "TensorBoardLog",
    "TrainingLog",
    "embed_batch",
    "final_metrics",
    "hparam_values",
    "open_training_log",
    "projector_metadata",
]
