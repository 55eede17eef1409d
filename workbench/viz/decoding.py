"""Decoding results as tables and figures (the decoding notebook).

Input is the plain-JSON output of :func:`workbench.evaluation.decoding.decode`::

    {"meta": {"label", "kind", "categories", "chance", "grouping", "n_folds", ...},
     "methods": {method: {metric: {"mean": float, "ci": float, "folds": [float, ...]}}}}

(``ci`` = 1.96 · std / √F over the F folds), and its out-of-fold predictions
(``predictions_out``: ``{"true", "fold", "methods": {method: predicted}}``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from sklearn.metrics import confusion_matrix

from workbench.errors import ConfigError, DataError


def decoding_frame(tasks: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """Long table ``task, kind, method, metric, mean, ci`` of every task's results."""
    rows = [
        {"task": task, "kind": r["meta"]["kind"], "method": method, "metric": metric, "mean": v["mean"], "ci": v["ci"]}
        for task, r in tasks.items()
        for method, metrics in r["methods"].items()
        for metric, v in metrics.items()
    ]
    if not rows:
        raise DataError("no decoding results to tabulate")
    return pd.DataFrame(rows)


def headline_table(tasks: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """Rows = methods, columns = tasks (``"task (bal. acc.)"`` or ``"task (R²)"``), cells = ``mean ± ci``.

    The headline metric is balanced accuracy for categorical labels and R² for continuous ones;
    a method that was not run on a task has an empty cell.
    """
    frame = decoding_frame(tasks)
    headline = {"categorical": "balanced_accuracy", "continuous": "r2"}
    frame = frame[frame["metric"] == frame["kind"].map(headline)]
    frame = frame.assign(cell=[f"{m:.2f} ± {c:.2f}" for m, c in zip(frame["mean"], frame["ci"])])
    table = frame.pivot(index="method", columns="task", values="cell").reindex(columns=list(tasks))
    table = table.reindex(list(dict.fromkeys(frame["method"]))).fillna("")
    table.columns = [f"{t} ({'bal. acc.' if r['meta']['kind'] == 'categorical' else 'R²'})" for t, r in tasks.items()]
    table.index.name = "method"
    return table


def decoding_markdown(tasks: Mapping[str, dict[str, Any]]) -> str:
    """:func:`headline_table` as one Markdown table."""
    table = headline_table(tasks)
    lines = ["| method | " + " | ".join(table.columns) + " |", "|---|" + "---|" * len(table.columns)]
    lines += [f"| {m} | " + " | ".join(row) + " |" for m, row in table.iterrows()]
    return "\n".join(lines)


def plot_confusion(
    results: dict[str, Any], predictions: dict[str, Any], methods: Sequence[str], normalize: bool = True
) -> Figure:
    """Confusion matrices of out-of-fold predictions of a categorical task, one panel per method.

    Rows are true categories, columns predicted ones; with ``normalize`` each row sums to 1 (the
    diagonal is the recall of each category, its mean the balanced accuracy).
    """
    meta = results["meta"]
    if meta["kind"] != "categorical":
        raise ConfigError(f"{meta['label']!r} is continuous; a confusion matrix needs a categorical label")
    missing = [m for m in methods if m not in predictions["methods"]]
    if missing:
        raise ConfigError(f"no predictions for {missing}; available: {list(predictions['methods'])}")
    names = list(meta["categories"])
    codes = sorted(np.unique(predictions["true"]).astype(int).tolist())
    fig = Figure(figsize=(4.2 * len(methods), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(methods)))
    for ax, method in zip(axes, methods, strict=True):
        matrix = confusion_matrix(predictions["true"], predictions["methods"][method], labels=codes)
        if normalize:
            matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(matrix, cmap="viridis", vmin=0, vmax=1 if normalize else None)
        ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        score = results["methods"][method]["balanced_accuracy"]["mean"]
        ax.set_title(f"{method}\nbalanced accuracy {score:.2f}", fontsize=9)
        ax.set_xlabel("predicted")
    axes[0].set_ylabel("true")
    fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true category" if normalize else "windows")
    return fig


def plot_predicted_vs_true(results: dict[str, Any], predictions: dict[str, Any], methods: Sequence[str]) -> Figure:
    """Out-of-fold predictions against the true values of a continuous task, one panel per method."""
    meta = results["meta"]
    if meta["kind"] != "continuous":
        raise ConfigError(f"{meta['label']!r} is categorical; a predicted-vs-true scatter needs a continuous label")
    true = np.asarray(predictions["true"], dtype=float)
    fig = Figure(figsize=(3.6 * len(methods), 3.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(methods), sharex=True, sharey=True))
    low, high = float(true.min()), float(true.max())
    for ax, method in zip(axes, methods, strict=True):
        predicted = np.asarray(predictions["methods"][method], dtype=float)
        ax.scatter(true, predicted, s=6, alpha=0.4, c=predictions["fold"], cmap="tab10")
        ax.plot([low, high], [low, high], color="0.3", lw=1, ls="--")
        rho = spearmanr(true, predicted).statistic
        r2 = results["methods"][method]["r2"]["mean"]
        ax.set_title(f"{method}\nR² {r2:.2f}, ρ {rho:.2f} (pooled)", fontsize=9)
        ax.set_xlabel(f"true {meta['label']}")
    axes[0].set_ylabel(f"predicted {meta['label']}")
    return fig


__all__ = ["decoding_frame", "decoding_markdown", "headline_table", "plot_confusion", "plot_predicted_vs_true"]
