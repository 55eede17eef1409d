"""Few-shot identification results as tables and figures (the few-shot notebook).

Input is the plain-JSON output of :func:`workbench.evaluation.closed_set` /
:func:`~workbench.evaluation.open_set` (``metrics.json``)::

    {"meta": {"protocol", "window", "n_way", "n_episodes", ...},
     "methods": {method: {str(k): {metric: {"mean": float, "ci": float}}}}}

where ``ci`` is the 95 % half-width ``1.96 · std / sqrt(E)`` over episodes and the method
``"chance"`` holds the level of a guess. Verification curves take pooled genuine / impostor
scores (``EpisodeResult.genuine`` / ``.impostor``). DET curves follow Martin et al. 1997,
"The DET curve in assessment of detection task performance", Eurospeech.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import norm
from sklearn.metrics import auc, det_curve, roc_curve

from workbench.errors import ConfigError, DataError
from workbench.viz.outputs import literal, markdown_text

COLUMNS = ("protocol", "window", "n_way", "method", "k", "metric", "mean", "ci")
CHANCE = "chance"
# DET axes: error rates of 0 or 1 have infinite normal deviates; they are drawn at these limits.
DET_RATE_LIMITS = (1e-4, 1.0 - 1e-4)
DET_TICKS = (0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95, 0.99)


def results_frame(results_by_window: Mapping[int, dict[str, Any]] | Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Long table of evaluation results.

    Parameters
    ----------
    results_by_window : mapping of int to dict, or iterable of dict
        Results of :func:`~workbench.evaluation.closed_set` / :func:`~workbench.evaluation.open_set`,
        e.g. ``{20: results_w20, 40: results_w40}``. The window is read from
        ``meta["window"]``; a mapping key that disagrees with it raises :class:`DataError`.

    Returns
    -------
    pandas.DataFrame
        One row per protocol × window × method × K × metric with columns
        ``protocol, window, n_way, method, k, metric, mean, ci`` (``k`` int), in input order.
    """
    items = (
        results_by_window.items() if isinstance(results_by_window, Mapping) else ((None, r) for r in results_by_window)
    )
    rows = []
    for key, results in items:
        try:
            meta, methods = results["meta"], results["methods"]
            window = int(meta["window"])
        except (KeyError, TypeError) as exc:
            raise DataError(
                f"results_frame: not an evaluation result (missing {exc}); pass the "
                "dict returned by closed_set / open_set or read from metrics.json"
            ) from None
        if key is not None and int(key) != window:
            raise DataError(f"results_frame: key {key} holds results for window {window}")
        for method, per_k in methods.items():
            for k, per_metric in per_k.items():
                for metric, value in per_metric.items():
                    rows.append(
                        (
                            meta.get("protocol", ""),
                            window,
                            meta.get("n_way"),
                            method,
                            int(k),
                            metric,
                            float(value["mean"]),
                            float(value["ci"]),
                        )
                    )
    if not rows:
        raise DataError("results_frame: no results given")
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _select(frame: pd.DataFrame, metric: str, protocol: str | None) -> tuple[pd.DataFrame, str]:
    protocols = list(dict.fromkeys(frame["protocol"]))
    if protocol is None:
        if len(protocols) > 1:
            raise ConfigError(f"the frame holds protocols {protocols}; choose one with protocol=")
        protocol = protocols[0]
    chosen = frame[(frame["protocol"] == protocol) & (frame["metric"] == metric)]
    if chosen.empty:
        raise ConfigError(
            f"no rows for protocol={protocol!r}, metric={metric!r}; the frame holds protocols "
            f"{protocols} and metrics {sorted(set(frame['metric']))}"
        )
    return chosen, protocol


def _curves(ax, table: pd.DataFrame, x: str, colours: dict[str, str]) -> None:
    """One line with a CI band per method; the chance level dashed."""
    for method, rows in table.groupby("method", sort=False):
        rows = rows.sort_values(x)
        xs, mean, ci = rows[x].to_numpy(), rows["mean"].to_numpy(), rows["ci"].to_numpy()
        if method == CHANCE:
            ax.plot(xs, mean, linestyle="--", color="grey", label=CHANCE)
            continue
        ax.plot(xs, mean, marker="o", markersize=3, color=colours[method], label=literal(method))
        ax.fill_between(xs, mean - ci, mean + ci, color=colours[method], alpha=0.2)


def _colours(frame: pd.DataFrame) -> dict[str, str]:
    methods = [m for m in dict.fromkeys(frame["method"]) if m != CHANCE]
    return {m: f"C{i % 10}" for i, m in enumerate(methods)}


def plot_k_curves(frame: pd.DataFrame, metric: str = "accuracy", protocol: str | None = None) -> Figure:
    """``metric`` against K (support windows per class), one panel per window length.

    Parameters
    ----------
    frame : pandas.DataFrame
        Output of :func:`results_frame`.
    metric : {"accuracy", "macro_f1", "roc_auc", "eer"}
    protocol : str, optional
        ``"closed-set"`` or ``"open-set"``; may be omitted when the frame holds one.

    Returns
    -------
    Figure
        In panel ``w`` (windows ascending), per method in frame order: a line of the means
        against K with a ``mean ± ci`` band (``fill_between``); ``"chance"`` a dashed line.
    """
    table, protocol = _select(frame, metric, protocol)
    windows = sorted(set(table["window"]))
    fig = Figure(figsize=(4.0 * len(windows) + 1.5, 3.6), layout="constrained")
    axes = fig.subplots(1, len(windows), squeeze=False, sharey=True)[0]
    colours = _colours(table)
    for ax, window in zip(axes, windows):
        rows = table[table["window"] == window]
        _curves(ax, rows, "k", colours)
        ax.set_xscale("log", base=2)
        ks = sorted(set(rows["k"]))
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("K (support windows per subject)")
        n_way = rows["n_way"].iloc[0]
        ax.set_title(f"W = {window}" + (f", {n_way}-way" if pd.notna(n_way) else ""))
    axes[0].set_ylabel(f"{metric} (mean ± 95% CI)")
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    fig.suptitle(literal(f"{protocol}: {metric} against K"))
    return fig


def plot_window_curves(
    frame: pd.DataFrame, metric: str = "accuracy", k: int = 1, protocol: str | None = None
) -> Figure:
    """``metric`` against the window length W at a fixed K, one line and CI band per method.

    Returns
    -------
    Figure
        Per method in frame order: a line of the means against W with a ``mean ± ci`` band;
        ``"chance"`` a dashed line.
    """
    table, protocol = _select(frame, metric, protocol)
    table = table[table["k"] == int(k)]
    if table.empty:
        raise ConfigError(f"no rows for K = {k}; the frame holds K in {sorted(set(frame['k']))}")
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    _curves(ax, table, "window", _colours(table))
    windows = sorted(set(table["window"]))
    ax.set_xticks(windows, [str(w) for w in windows])
    ax.set_xlabel("window length W (frames)")
    ax.set_ylabel(f"{metric} (mean ± 95% CI)")
    ax.set_title(literal(f"{protocol}: {metric} against W at K = {k}"))
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small")
    return fig


def _deviate(rate: np.ndarray) -> np.ndarray:
    return norm.ppf(np.clip(rate, *DET_RATE_LIMITS))


def plot_roc_det(scores: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Verification ROC and DET curves per method from pooled genuine and impostor scores.

    Parameters
    ----------
    scores : mapping of str to (genuine, impostor)
        Per method, the similarity of queries to their own prototype (genuine) and to the
        others (impostor), any shapes (flattened); higher means more alike.

    Returns
    -------
    Figure
        ``axes[0]`` ROC: ``lines[i]`` = ``(fpr, tpr)`` of ``sklearn.metrics.roc_curve``, label
        with the AUC; the diagonal last. ``axes[1]`` DET: ``lines[i]`` = ``(Φ⁻¹(fpr), Φ⁻¹(fnr))``
        of ``sklearn.metrics.det_curve`` (Φ⁻¹ = ``scipy.stats.norm.ppf``), rates clipped to
        [1e-4, 1 - 1e-4] so that 0 and 1 stay on the axes.
    """
    if not scores:
        raise DataError("plot_roc_det: no scores given")
    fig = Figure(figsize=(10.0, 4.2), layout="constrained")
    ax_roc, ax_det = fig.subplots(1, 2)
    for method, (genuine, impostor) in scores.items():
        genuine, impostor = np.ravel(genuine), np.ravel(impostor)
        if not genuine.size or not impostor.size:
            raise DataError(f"plot_roc_det: {method} needs both genuine and impostor scores")
        labels = np.concatenate([np.ones(genuine.size), np.zeros(impostor.size)])
        values = np.concatenate([genuine, impostor])
        fpr, tpr, _ = roc_curve(labels, values)
        ax_roc.plot(fpr, tpr, label=f"{literal(method)} (AUC {auc(fpr, tpr):.3f})")
        fpr_det, fnr_det, _ = det_curve(labels, values)
        single = fpr_det.size == 1  # perfectly separated scores: one point, shown as a dot
        ax_det.plot(_deviate(fpr_det), _deviate(fnr_det), marker="o" if single else None, label=literal(method))
    ax_roc.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax_roc.set_xlabel("false accept rate")
    ax_roc.set_ylabel("true accept rate")
    ax_roc.set_title("ROC (pooled verification scores)")
    ax_roc.legend(fontsize="small", loc="lower right")
    ticks = _deviate(np.asarray(DET_TICKS))
    tick_labels = [f"{100 * t:g}%" for t in DET_TICKS]
    ax_det.set_xticks(ticks, tick_labels)
    ax_det.set_yticks(ticks, tick_labels)
    limits = _deviate(np.asarray(DET_RATE_LIMITS))
    ax_det.set_xlim(*limits)
    ax_det.set_ylim(*limits)
    ax_det.set_xlabel("false accept rate")
    ax_det.set_ylabel("false reject rate")
    ax_det.set_title("DET (normal-deviate axes)")
    ax_det.grid(alpha=0.3)
    ax_det.legend(fontsize="small", loc="upper right")
    return fig


def table_markdown(
    frame: pd.DataFrame, metric: str = "accuracy", ks: Sequence[int] = (1, 4), protocol: str | None = None
) -> str:
    """Markdown table: rows = methods, columns = window × K, cells ``"0.73 ± 0.02"``.

    Cells of a window × K that was not evaluated for a method read ``"–"``; names are shown
    verbatim (:func:`~workbench.viz.outputs.markdown_text`).
    """
    table, protocol = _select(frame, metric, protocol)
    table = table[table["k"].isin([int(k) for k in ks])]
    if table.empty:
        raise ConfigError(f"no rows for K in {tuple(ks)}; the frame holds K in {sorted(set(frame['k']))}")
    columns = [
        (w, k) for w in sorted(set(table["window"])) for k in ks if ((table["window"] == w) & (table["k"] == k)).any()
    ]
    cells = {(r.method, r.window, r.k): f"{r.mean:.2f} ± {r.ci:.2f}" for r in table.itertuples()}
    lines = [
        markdown_text(f"{protocol}, {metric} (mean ± 95% CI)"),
        "",
        "| method | " + " | ".join(f"W = {w}, K = {k}" for w, k in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for method in dict.fromkeys(table["method"]):
        row = " | ".join(cells.get((method, w, k), "–") for w, k in columns)
        lines.append(f"| {markdown_text(method)} | {row} |")
    return "\n".join(lines)
