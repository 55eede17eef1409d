"""Training curves from the ``history.json`` the training engine writes (the training notebook).

The file holds ``{"step": [{"step", "epoch", "lr", "weight_decay", "loss", ...}], "epoch":
[{"epoch", "loss", "step"}], "monitor": [{"step", "loss", "floor", "rankme", ...}]}``: one
record per optimizer step with every scalar the method logged (``training_loss`` entries,
``grad_norm`` when clipping), the mean loss of every finished epoch, and the learning
diagnostics on the fixed monitor batch (:mod:`workbench.train.monitor`): the objective beside
its trivial floor and the centred RankMe, drawn by :func:`plot_learning`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from scipy.signal import lfilter

from workbench.errors import DataError
from workbench.train import HISTORY_NAME
from workbench.viz.outputs import literal

STEP_KEYS = ("step", "epoch", "lr", "loss")


def load_history(path: str | Path) -> dict[str, list[dict[str, float]]]:
    """Read a training history.

    Parameters
    ----------
    path : str or Path
        A ``history.json`` file, or the run folder holding one.

    Returns
    -------
    dict
        ``{"step": [...], "epoch": [...]}`` as written by :func:`workbench.train.train`.
    """
    path = Path(path)
    if path.is_dir():
        path = path / HISTORY_NAME
    if not path.is_file():
        raise DataError(f"{path}: no training history; train the method first (it writes {HISTORY_NAME})")
    try:
        history = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable training history ({exc}); re-run the training") from None
    if not isinstance(history, dict) or not all(isinstance(history.get(k), list) for k in ("step", "epoch")):
        raise DataError(f"{path}: expected an object with 'step' and 'epoch' lists")
    missing = sorted({k for record in history["step"] for k in STEP_KEYS if k not in record})
    if missing:
        raise DataError(f"{path}: step records lack {missing}")
    return history


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average (as TensorBoard's smoothing slider).

    ``s_t = (1 - w) Σ_{i<=t} w^(t-i) x_i / (1 - w^(t+1))``: a weighted mean of the values so
    far in which the start is not pulled towards 0. ``weight = 0`` returns ``values``.
    """
    values = np.asarray(values, dtype=np.float64)
    if not 0.0 <= weight < 1.0:
        raise DataError(f"smoothing weight {weight} must be in [0, 1)")
    ema = lfilter([1.0 - weight], [1.0, -weight], values)
    return ema / (1.0 - weight ** np.arange(1, values.size + 1))


def _column(records: list[dict[str, float]], key: str) -> np.ndarray:
    return np.array([r.get(key, np.nan) for r in records], dtype=np.float64)


def plot_history(
    histories: dict[str, dict],
    smoothing: float = 0.9,
    scalars: Sequence[str] = (),
) -> Figure:
    """Loss and learning rate against optimizer step, one column per method.

    Parameters
    ----------
    histories : dict of str to dict
        Method name -> :func:`load_history` output.
    smoothing : float
        Weight of :func:`smooth` for the bold loss line; the raw loss is drawn faint behind it.
    scalars : sequence of str
        Further logged scalars (e.g. ``"grad_norm"``), one extra row each; a method that did
        not log one shows an empty panel.

    Returns
    -------
    Figure
        Row 0, column ``m``: ``lines[0]`` raw loss, ``lines[1]`` smoothed loss (both against
        ``step``), ``lines[2]`` epoch means at the epoch's last step; row 1: ``lines[0]`` the
        learning rate; row ``2 + i``: ``scalars[i]``.
    """
    if not histories:
        raise DataError("plot_history: no histories given")
    empty = [name for name, h in histories.items() if not h.get("step")]
    if empty:
        raise DataError(f"plot_history: {empty} logged no steps; train them first")
    rows = 2 + len(scalars)
    fig = Figure(figsize=(4.0 * len(histories) + 0.5, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, len(histories), squeeze=False, sharex="col")
    for column, (name, history) in enumerate(histories.items()):
        steps = _column(history["step"], "step")
        loss = _column(history["step"], "loss")
        ax = axes[0, column]
        (raw,) = ax.plot(steps, loss, alpha=0.25, linewidth=0.8, label="loss")
        ax.plot(steps, smooth(loss, smoothing), color=raw.get_color(), label=f"EMA {smoothing}")
        epochs = history.get("epoch", [])
        ax.plot(_column(epochs, "step"), _column(epochs, "loss"), "o", color="black", markersize=3, label="epoch mean")
        ax.set_title(literal(name))
        ax.legend(fontsize="x-small")
        axes[1, column].plot(steps, _column(history["step"], "lr"), color="tab:green")
        for row, key in enumerate(scalars, start=2):
            axes[row, column].plot(steps, _column(history["step"], key), linewidth=0.8)
        for row, key in enumerate(("loss", "learning rate", *scalars)):
            axes[row, column].set_ylabel(key if column == 0 else "")
        axes[-1, column].set_xlabel("optimizer step")
    return fig


def plot_learning(histories: dict[str, dict], extras: Sequence[str] = ("content_cosine", "init_share")) -> Figure:
    """The learning diagnostics of each run: its objective against its trivial floor, and RankMe.

    Parameters
    ----------
    histories : dict of str to dict
        Method name -> :func:`load_history` output with ``"monitor"`` records.
    extras : sequence of str
        Family scalars drawn in a third row where a run logged them (jepa's content cosine and
        the share of its initialisation the target encoder keeps).

    Returns
    -------
    Figure
        Column ``m``: row 0 ``lines[0]`` the monitor-batch loss and ``lines[1]`` the floor
        (dashed) against the step; row 1 the centred RankMe; row 2 (when any run logged one of
        ``extras``) those scalars.
    """
    if not histories:
        raise DataError("plot_learning: no histories given")
    missing = [name for name, h in histories.items() if not h.get("monitor")]
    if missing:
        raise DataError(f"plot_learning: {missing} have no learning diagnostics (trained with monitor_every=0?)")
    logged = [key for key in extras if any(key in r for h in histories.values() for r in h["monitor"])]
    rows = 2 + bool(logged)
    fig = Figure(figsize=(4.0 * len(histories) + 0.5, 2.4 * rows), layout="constrained")
    axes = fig.subplots(rows, len(histories), squeeze=False, sharex="col")
    for column, (name, history) in enumerate(histories.items()):
        records = history["monitor"]
        steps = _column(records, "step")
        ax = axes[0, column]
        ax.plot(steps, _column(records, "loss"), "o-", markersize=3, label="loss (monitor batch)")
        ax.plot(steps, _column(records, "floor"), "--", color="black", label="trivial floor")
        ax.set_title(literal(f"{name} ({history.get('monitor_on', 'monitor batch')})"), fontsize="small")
        ax.legend(fontsize="x-small")
        axes[1, column].plot(steps, _column(records, "rankme"), "o-", markersize=3, color="tab:purple")
        own = [key for key in logged if any(key in r for r in records)]
        for key in own:
            axes[2, column].plot(steps, _column(records, key), "o-", markersize=3, label=key)
        if own:
            axes[2, column].legend(fontsize="x-small")
        for row, key in enumerate(("objective", "RankMe (centred)", "family scalars")[:rows]):
            axes[row, column].set_ylabel(key if column == 0 else "")
        axes[-1, column].set_xlabel("optimizer step")
    return fig
