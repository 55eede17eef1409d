"""Learning diagnostics while training: the objective on a fixed monitor batch beside its trivial floor.

A loss curve alone cannot say whether a family learned anything: a self-supervised objective
can fall because the model learned the position of a token, a constant direction shared by
every target or the mean of the data. So every ``monitor_every`` optimiser steps (and before
the first and after the last) the engine evaluates the family's
:meth:`~workbench.models.base.Method.diagnostics` on one fixed batch of windows — the same
windows, masks and views every time — and records:

* ``loss``: the family's objective on that batch;
* ``floor``: what a model that learned nothing but position, a constant or the mean scores on
  the same batch (:attr:`~workbench.models.base.Method.floor_description` says which);
* ``rankme``: the effective rank of the batch's *centred* embeddings
  (:func:`workbench.spectrum.rankme`), and ``spread`` / ``offset_ratio``: the mean distance of
  the embeddings from their mean over their mean norm, and the norm of the mean over that
  distance — together they show collapse while it happens (a centred rank stays high for
  windows that differ by a jitter, the spread does not);
* any family scalars (jepa's ``content_cosine`` and ``init_share``, lfr's ``target_cosine``…).

The records go to ``history.json`` under ``"monitor"``; a run whose last record is still at its
floor (:meth:`~workbench.models.base.Method.learning_verdict`) ends with a
:class:`~workbench.errors.LearningWarning` and its verdict in the history.

The monitor batch is drawn from held-out windows when the caller passes them (the benchmarks
do), else from the training windows; ``history["monitor_on"]`` says which.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from workbench.data.dataset import WindowDataset
from workbench.data.normalize import Standardizer
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError
from workbench.models.base import Method
from workbench.spectrum import rankme

MONITOR_SEED = 271828  # the same masks and views at every call
MONITOR_POINTS = 20  # records over a run when monitor_every is left to the engine


def monitor_interval(total_steps: int, every: int | None) -> int:
    """Steps between records: ``every``, or about :data:`MONITOR_POINTS` records over the run (0: off)."""
    if every is not None:
        return every
    return max(1, math.ceil(total_steps / MONITOR_POINTS))


def is_monitor_step(step: int, total_steps: int, interval: int) -> bool:
    """Whether the engine records after optimiser step ``step`` (0: before the first step)."""
    return interval > 0 and (step % interval == 0 or step == total_steps)


def monitor_batch(windows: WindowSet, standardizer: Standardizer, n_windows: int) -> dict[str, torch.Tensor]:
    """``n_windows`` evenly spaced windows of ``windows``, scaled as training scales them, as one batch."""
    picks = np.unique(np.linspace(0, len(windows) - 1, min(n_windows, len(windows))).round().astype(int))
    return WindowDataset(windows, standardizer)[picks.tolist()]


def diagnose(
    method: Method, batch: dict[str, torch.Tensor], step: int, autocast: Any, device: torch.device
) -> dict[str, float]:
    """One record: ``step``, the family's :meth:`~workbench.models.base.Method.diagnostics` and ``rankme``.

    Runs in eval mode without gradients, with the global RNG seeded to :data:`MONITOR_SEED`
    (the engine reseeds it before every optimiser step, so training draws are unaffected);
    the module's training mode is restored afterwards.
    """
    was_training = method.training
    method.eval()
    torch.manual_seed(MONITOR_SEED)
    batch = {k: v.to(device) for k, v in batch.items()}
    try:
        with torch.no_grad(), autocast:
            record = {key: float(value) for key, value in method.diagnostics(batch).items()}
            embeddings = method.embed(batch["x"]).float().cpu().numpy()
    finally:
        method.train(was_training)
    record.update(embedding_spread(embeddings))
    return {"step": float(step), **record}


def embedding_spread(embeddings: np.ndarray) -> dict[str, float]:
    """``rankme`` (centred), ``spread`` (mean distance from the mean over the mean norm) and ``offset_ratio``.

    NaN for all three when an embedding is not finite (the verdict and the loss say why).
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if not np.isfinite(x).all():
        return {"rankme": math.nan, "spread": math.nan, "offset_ratio": math.nan}
    mean = x.mean(axis=0)
    distance = float(np.linalg.norm(x - mean, axis=1).mean())
    norm = float(np.linalg.norm(x, axis=1).mean())
    return {
        "rankme": rankme(x),
        "spread": distance / norm if norm > 0 else 0.0,
        "offset_ratio": float(np.linalg.norm(mean)) / distance if distance > 0 else math.inf,
    }


def check_monitor_labels(windows: WindowSet, monitor: WindowSet | None) -> None:
    """ConfigError unless held-out ``monitor`` windows carry the training windows' label columns, in order.

    A family that reads labels (``batch["y"]``) must see the same columns on the monitor batch.
    """
    if monitor is None or windows.y is None:
        return
    if tuple(monitor.label_columns) != tuple(windows.label_columns):
        raise ConfigError(
            f"monitor windows carry the label columns {[c.name for c in monitor.label_columns]} but the training "
            f"windows {[c.name for c in windows.label_columns]}; build the held-out windows with the same "
            "label_names (or pass monitor=None to monitor on training windows)"
        )


def floor_postfix(record: dict[str, float]) -> dict[str, str]:
    """The progress line's view of the last record: held-out loss against the floor, and RankMe."""
    out = {"monitor": f"{record['loss']:.4g}"}
    if math.isfinite(record.get("floor", math.nan)):
        out["floor"] = f"{record['floor']:.4g}"
    out["rankme"] = f"{record['rankme']:.1f}"
    return out


__all__ = [
    "MONITOR_POINTS",
    "MONITOR_SEED",
    "check_monitor_labels",
    "diagnose",
    "embedding_spread",
    "floor_postfix",
    "is_monitor_step",
    "monitor_batch",
    "monitor_interval",
]
