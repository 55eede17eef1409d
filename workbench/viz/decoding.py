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
from workbench.evaluation.decoding import pretraining_note
from workbench.evaluation.label_efficiency import FEATURE_BASELINES, HEADLINE_METRIC, matching_sizes
from workbench.viz.outputs import literal, markdown_text


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


def markdown_table(table: pd.DataFrame) -> str:
    """A table of strings as Markdown: its index name and columns as the header; every cell shown verbatim."""
    header = [table.index.name or "", *table.columns]
    lines = ["| " + " | ".join(map(markdown_text, header)) + " |", "|---|" + "---|" * len(table.columns)]
    lines += [f"| {markdown_text(m)} | " + " | ".join(map(markdown_text, row)) + " |" for m, row in table.iterrows()]
    return "\n".join(lines)


def decoding_markdown(tasks: Mapping[str, dict[str, Any]]) -> str:
    """:func:`headline_table` as one Markdown table."""
    return markdown_table(headline_table(tasks))


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
    names = [literal(c) for c in meta["categories"]]
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
        ax.set_title(f"{literal(method)}\nbalanced accuracy {score:.2f}", fontsize=9)
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
        ax.set_title(f"{literal(method)}\nR² {r2:.2f}, ρ {rho:.2f} (pooled)", fontsize=9)
        ax.set_xlabel(f"true {literal(meta['label'])}")
    axes[0].set_ylabel(f"predicted {literal(meta['label'])}")
    return fig


def _all_position(meta: dict[str, Any]) -> float:
    """Where ``"all"`` sits on the size axis: the mean number of training groups of a fold."""
    n_test = np.mean([len(fold["test"]) for fold in meta["folds"]])
    return float(meta["n_groups"] - n_test)


def curves_table(results: dict[str, Any]) -> pd.DataFrame:
    """Rows = methods, columns = labelled-set sizes, cells = the headline metric ``mean ± ci``."""
    metric = HEADLINE_METRIC[results["meta"]["kind"]]
    curves = results.get("curves")
    if not curves:
        raise DataError("these decoding results hold no label-efficiency curves (run decode with sizes)")
    sizes = results["meta"]["sizes"]
    rows = {
        name: [f"{c[n][metric]['mean']:.2f} ± {c[n][metric]['ci']:.2f}" if n in c else "" for n in sizes]
        for name, c in curves.items()
    }
    grouping = "subjects" if results["meta"]["grouping"] == "subject" else "runs"
    table = pd.DataFrame.from_dict(rows, orient="index", columns=[f"n = {n}" for n in sizes])
    table.index.name = f"method (labelled {grouping})"
    return table


def _style(name: str) -> dict[str, Any]:
    """Baselines grey; a family's readouts share its colour: solid probe, dashed fine-tuned, dotted untrained."""
    base = name.split(" · ")[0]
    if base in FEATURE_BASELINES or base == "permuted-labels":
        shade = {"mean-activation": "0.0", "fc-edges": "0.45", "raw-window": "0.65", "permuted-labels": "0.8"}[base]
        return {"color": shade, "ls": "-", "lw": 2.2 if base == "mean-activation" else 1.4, "marker": "s"}
    family = base.removesuffix("-untrained")
    colour = {"fewshot": "tab:purple", "jepa": "tab:blue", "yaware": "tab:green", "lfr": "tab:orange"}.get(
        family, "tab:red"
    )
    ls = "--" if name.endswith("· finetune") else ("-." if name.endswith("· attentive") else "-")
    return {"color": colour, "ls": ls, "lw": 1.4, "marker": "o", "alpha": 0.45 if base.endswith("-untrained") else 1.0}


def plot_label_efficiency(results: dict[str, Any], methods: Sequence[str] | None = None) -> Figure:
    """The headline metric against the number of labelled training groups (log axis), one line per method.

    Bands are the 95 % CI over folds; the dotted line is the best feature baseline on all labels
    less its CI (what "matches" means in :func:`~workbench.evaluation.label_efficiency.matching_sizes`).
    """
    meta = results["meta"]
    curves = results.get("curves")
    if not curves:
        raise DataError("these decoding results hold no label-efficiency curves (run decode with sizes)")
    metric = HEADLINE_METRIC[meta["kind"]]
    methods = list(curves) if methods is None else list(methods)
    missing = [m for m in methods if m not in curves]
    if missing:
        raise ConfigError(f"no curves for {missing}; available: {list(curves)}")
    sizes = meta["sizes"]
    x = np.array([_all_position(meta) if n == "all" else float(n) for n in sizes])
    fig = Figure(figsize=(7.5, 4.6), layout="constrained")
    ax = fig.subplots()
    for name in methods:
        shown = [i for i, n in enumerate(sizes) if n in curves[name]]
        mean = np.array([curves[name][sizes[i]][metric]["mean"] for i in shown])
        ci = np.array([curves[name][sizes[i]][metric]["ci"] for i in shown])
        style = _style(name)
        ax.plot(x[shown], mean, label=literal(name), ms=4, **style)
        ax.fill_between(x[shown], mean - ci, mean + ci, color=style["color"], alpha=0.08)
    headline = matching_sizes(results)
    ax.axhline(headline["target"], color="k", ls=":", lw=1)
    if meta["kind"] == "categorical":
        ax.axhline(meta["chance"], color="0.6", lw=0.8)
    ax.set_xscale("log")
    ax.set_xticks(x, [f"all\n({v:.0f})" if n == "all" else n for n, v in zip(sizes, x, strict=True)])
    ax.minorticks_off()
    grouping = "subjects" if meta["grouping"] == "subject" else "runs"
    ax.set_xlabel(f"labelled training {grouping} (log scale)")
    ax.set_ylabel("balanced accuracy" if metric == "balanced_accuracy" else "R²")
    title = f"{meta.get('dataset', '')} {meta['label']}: label efficiency{pretraining_note(meta)}"
    ax.set_title(literal(title), fontsize=9)
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return fig


def matching_table(tasks: Mapping[str, dict[str, Any]]) -> pd.DataFrame:
    """Rows = encoders, columns = tasks, cells = the smallest ``n`` matching the best baseline, or "never"."""
    columns = {}
    for key, results in tasks.items():
        if not results.get("curves"):
            continue
        headline = matching_sizes(results)
        target = f"{key} (vs {headline['baseline']} {headline['target']:.2f})"
        columns[target] = {name: "never" if e["n"] is None else str(e["n"]) for name, e in headline["encoders"].items()}
    if not columns:
        raise DataError("no decoding task holds label-efficiency curves")
    table = pd.DataFrame(columns).fillna("")
    table.index.name = "encoder"
    return table


__all__ = [
    "curves_table",
    "decoding_frame",
    "decoding_markdown",
    "headline_table",
    "markdown_table",
    "matching_table",
    "plot_confusion",
    "plot_label_efficiency",
    "plot_predicted_vs_true",
]
