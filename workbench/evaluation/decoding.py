"""Task decoding: a label of each window read from frozen features, group-wise cross-validated.

The second headline task (``docs/evaluation.md``). Every window of ``W`` frames that carries the
label (a categorical label by the ``"pure"`` or ``"majority"`` rule of
:mod:`workbench.data.labels`, a continuous one as the mean over its frames) is one sample; the
samples are split into folds by **group**, so no subject (``grouping="subject"``, scikit-learn
``GroupKFold``) or no run (``grouping="run"``, ``LeaveOneGroupOut`` by default) is ever on both
sides of a split. Within each fold:

* every encoder factory is called with the windows of the training fold's runs only (trained,
  fitted or untrained, an encoder never sees a test window), and returns a function from
  windows to features;
* a linear probe is fitted on the training fold's features: ``StandardScaler`` then
  ``LogisticRegression`` (categorical) or ``Ridge`` (continuous) in one scikit-learn
  ``Pipeline``, so the scaling is fitted on the training fold too; token features
  ``(n, tokens, dim)`` get the attentive probe of :mod:`workbench.evaluation.attentive`;
* the test fold is scored: balanced accuracy and macro-F1 (categorical), R² and Spearman ρ
  (continuous).

Each metric is reported as mean ± 1.96·std/√F over the F folds (:func:`~workbench.evaluation.metrics.summarise`).
Baselines beside every encoder (as in fMRI foundation-model benchmarks, which always include a
connectome baseline): ``mean-activation`` (each region's mean over the window, the first-order
signal task decoding reads), ``fc-edges`` (Pearson correlations of the window, Fisher-z, upper
triangle; skipped with a note when it would exceed ``max_fc_edges`` features) and
``permuted-labels`` (the mean-activation probe fitted on training labels shuffled within the
fold: chance, measured).

Normalisation. With ``normalization="run"`` (the default) each run is z-scored on its own frames
before windows are cut (:func:`~workbench.data.normalize.standardize_runs`): nothing crosses runs
or subjects, within-run activation survives, run offsets go. A family still applies its own
scaling (its ``Standardizer``) inside its embedding function. ``"none"`` gives the recordings
as they are.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import balanced_accuracy_score, f1_score, r2_score
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from workbench.connectivity import correlation, fisher_z, upper_triangle
from workbench.data.normalize import standardize_runs
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError, WorkbenchError
from workbench.evaluation.attentive import attentive_probe
from workbench.evaluation.metrics import summarise
from workbench.evaluation.pools import EncoderFactory

GROUPINGS = ("subject", "run")
NORMALIZATIONS = ("run", "none")
BASELINE_NAMES = ("mean-activation", "fc-edges", "permuted-labels")
METRICS = {"categorical": ("balanced_accuracy", "macro_f1"), "continuous": ("r2", "spearman")}
_BATCH = 512


def mean_activation(windows: np.ndarray) -> np.ndarray:
    """Each region's mean over the window's frames: ``(n, W, R)`` → ``(n, R)`` float32."""
    return np.asarray(windows, dtype=np.float32).mean(axis=1)


def fc_edges(windows: np.ndarray) -> np.ndarray:
    """Fisher-z Pearson correlations of each window, upper triangle: ``(n, W, R)`` → ``(n, R(R-1)/2)``."""
    return upper_triangle(fisher_z(correlation(np.asarray(windows)))).numpy().astype(np.float32)


def decoding_scores(true: np.ndarray, predicted: np.ndarray, kind: str) -> dict[str, float]:
    """The metrics of one test fold.

    Parameters
    ----------
    true, predicted : numpy.ndarray
        ``(n,)`` labels (category codes or values) and predictions.
    kind : {"categorical", "continuous"}
        Categorical: ``balanced_accuracy`` (mean recall over the classes present in ``true``)
        and ``macro_f1``; continuous: ``r2`` (coefficient of determination) and ``spearman``
        (rank correlation, NaN when either side is constant).
    """
    if kind == "categorical":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a class predicted but absent from the fold
            balanced = balanced_accuracy_score(true, predicted)
        return {"balanced_accuracy": float(balanced), "macro_f1": float(f1_score(true, predicted, average="macro"))}
    constant = np.ptp(true) == 0 or np.ptp(predicted) == 0
    rho = float("nan") if constant else float(spearmanr(true, predicted).statistic)
    return {"r2": float(r2_score(true, predicted)), "spearman": rho}


def linear_predictions(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, kind: str, seed: int = 0
) -> np.ndarray:
    """Fit the linear probe on the training fold and predict the test fold.

    ``StandardScaler`` + ``LogisticRegression(C=1, max_iter=1000)`` for categorical labels,
    ``StandardScaler`` + ``Ridge(alpha=1)`` for continuous ones; the scaler sees the training
    rows only.
    """
    if kind == "categorical":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    else:
        model = make_pipeline(StandardScaler(), Ridge(alpha=1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # lbfgs may stop at max_iter on drifting features
        return model.fit(train_x, train_y).predict(test_x)


def _features(fn: Callable[[np.ndarray], np.ndarray], windows: WindowSet, index: np.ndarray) -> np.ndarray:
    """``fn`` over the windows ``index`` in batches: ``(n, D)`` or token features ``(n, N, D)``."""
    parts = [np.asarray(fn(windows.get(index[i : i + _BATCH])), dtype=np.float32) for i in range(0, len(index), _BATCH)]
    out = np.concatenate(parts)
    if out.ndim not in (2, 3) or out.shape[0] != len(index):
        raise DataError(
            f"an embedding function returned shape {out.shape} for {len(index)} windows; it must give "
            "(n, D) features or (n, tokens, D) token features"
        )
    return out


def _predict(train_x, train_y, test_x, kind: str, seed: int) -> np.ndarray:
    if train_x.ndim == 3:
        return attentive_probe(train_x, train_y, test_x, kind, seed=seed)
    return linear_predictions(train_x, train_y, test_x, kind, seed)


def _labelled(windows: WindowSet, exclude: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the windows with a defined label (none of ``exclude``) and their labels."""
    column = windows.label_columns[0]
    y = windows.y[:, 0].astype(np.float64)
    keep = np.isfinite(y)
    if exclude:
        if column.kind != "categorical":
            raise ConfigError(f"exclude={list(exclude)} applies to categorical labels; {column.name!r} is continuous")
        unknown = [v for v in exclude if v not in column.categories]
        if unknown:
            raise ConfigError(f"exclude: {unknown} are not categories of {column.name!r}; it has {column.categories}")
        codes = [column.categories.index(v) for v in exclude]
        keep &= ~np.isin(y, codes)
    index = np.flatnonzero(keep)
    if index.size == 0:
        raise DataError(
            f"no window of {windows.length} frames has a {column.name!r} label (rule {windows.label_rule!r}); "
            "shorten the window or use rule='majority'"
        )
    labels = y[index]
    if column.kind == "categorical":
        labels = labels.astype(np.int64)
        if np.unique(labels).size < 2:
            raise DataError(f"every labelled window has the same {column.name!r}; decoding needs two classes or more")
    return index, labels


def _groups(windows: WindowSet, grouping: str) -> tuple[np.ndarray, list[str]]:
    """Group of every window (its subject or its run) and the group names."""
    if grouping == "subject":
        return windows.labels, list(windows.subjects)
    keys = [f"{r.subject}/{r.session}" for r in windows.recordings]
    names = sorted(set(keys))
    if len(names) < len(keys):
        raise DataError("two recordings share subject and session; runs must be distinct to decode by run")
    code = np.array([names.index(k) for k in keys], dtype=np.int64)
    return code[windows.rec_index], names


def group_folds(groups: np.ndarray, grouping: str, n_folds: int | None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Train / test row indices of every fold; no group is on both sides of a fold.

    ``n_folds=None``: 5 folds by subject (``GroupKFold``), one fold per run (``LeaveOneGroupOut``).
    """
    n_groups = np.unique(groups).size
    if n_groups < 2:
        raise DataError(f"the labelled windows come from {n_groups} {grouping}; group-wise folds need two or more")
    if n_folds is None:
        n_folds = min(5, n_groups) if grouping == "subject" else n_groups
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or not 2 <= n_folds <= n_groups:
        raise ConfigError(f"folds={n_folds!r} must be a whole number between 2 and the {n_groups} groups ({grouping})")
    splitter = LeaveOneGroupOut() if n_folds == n_groups else GroupKFold(n_splits=int(n_folds))
    rows = np.zeros((groups.size, 1))
    return list(splitter.split(rows, groups=groups))


def _check_names(factories: dict[str, EncoderFactory]) -> None:
    clash = sorted(set(factories) & set(BASELINE_NAMES))
    if clash:
        raise ConfigError(f"factory names {clash} are reserved for the decoding baselines; rename them")


def decode(
    recordings: Sequence[Recording],
    label: str,
    window: int,
    factories: dict[str, EncoderFactory] | None = None,
    stride: int | None = None,
    grouping: str = "subject",
    n_folds: int | None = None,
    rule: str = "pure",
    exclude: Sequence[str] = (),
    normalization: str = "run",
    max_fc_edges: int = 20_000,
    seed: int = 0,
    predictions_out: dict | None = None,
    on_error: str = "raise",
) -> dict[str, Any]:
    """Decode a frame label from windows with every encoder and the baselines.

    Parameters
    ----------
    recordings : sequence of Recording
        ``(T, F)`` runs with ``frame_labels``.
    label : str
        A frame-label column; an unknown name is a DataError listing the available ones.
    window : int
        Window length ``W`` in frames.
    factories : dict of str to EncoderFactory, optional
        Encoders; each is called once per fold with the windows of that fold's training runs
        (no labels attached, every window, stride ``stride``), and returns ``(n, W, F) → (n, D)``
        features for the linear probe or ``(n, N, D)`` token features for the attentive probe.
    stride : int, optional
        Step between windows (default ``max(1, W // 2)``).
    grouping : {"subject", "run"}
        What a fold holds out.
    n_folds : int, optional
        Folds (default: 5 by subject, leave-one-run-out by run).
    rule : {"pure", "majority"}
        Window label of a categorical column (see :mod:`workbench.data.labels`).
    exclude : sequence of str
        Categories whose windows are dropped (e.g. ``["rest"]``).
    normalization : {"run", "none"}
        Per-run standardisation before windows are cut, or none (module docstring).
    max_fc_edges : int
        The ``fc-edges`` baseline is skipped (with a note in ``meta``) above this many edges.
    seed : int
        Seeds the probes and the label permutation.
    on_error : {"raise", "note"}
        What a WorkbenchError of an encoder does (e.g. a family that needs several subjects on a
        one-subject dataset): stop, or leave that encoder out with a note in ``meta["notes"]``.
    predictions_out : dict, optional
        Filled with ``{"true": (n,), "fold": (n,), "methods": {name: (n,) out-of-fold predictions}}``
        for confusion matrices and scatter plots.

    Returns
    -------
    dict
        Plain JSON: ``{"meta": {...}, "methods": {name: {metric: {"mean", "ci", "folds"}}}}``.
    """
    factories = dict(factories or {})
    _check_names(factories)
    if grouping not in GROUPINGS:
        raise ConfigError(f"grouping={grouping!r}: choose one of {list(GROUPINGS)}")
    if on_error not in ("raise", "note"):
        raise ConfigError(f"on_error={on_error!r}: choose 'raise' or 'note'")
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization={normalization!r}: choose one of {list(NORMALIZATIONS)}")
    stride = max(1, window // 2) if stride is None else stride
    recordings = standardize_runs(recordings) if normalization == "run" else list(recordings)
    windows = WindowSet(recordings, window, stride, label_names=[label], label_rule=rule)
    column = windows.label_columns[0]
    index, y = _labelled(windows, exclude)
    all_groups, group_names = _groups(windows, grouping)
    groups = all_groups[index]
    folds = group_folds(groups, grouping, n_folds)

    baselines: dict[str, Callable] = {"mean-activation": mean_activation}
    notes = []
    n_edges = windows.n_rois * (windows.n_rois - 1) // 2
    if n_edges <= max_fc_edges:
        baselines["fc-edges"] = fc_edges
    else:
        notes.append(f"fc-edges skipped: {n_edges} edges of {windows.n_rois} features exceed max_fc_edges")
    fixed = {name: _features(fn, windows, index) for name, fn in baselines.items()}

    names = [*baselines, "permuted-labels", *factories]
    predicted = {name: np.empty(len(index), dtype=np.float64) for name in names}
    per_fold: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    fold_meta, failed = [], set()
    fold_of = np.empty(len(index), dtype=np.int64)
    for f, (train, test) in enumerate(folds):
        fold_of[test] = f
        if column.kind == "categorical" and np.unique(y[train]).size < 2:
            raise DataError(f"fold {f}: its training windows hold one {label!r} class; use fewer folds")
        rng = np.random.default_rng([seed, f])
        features = dict(fixed)
        if factories:
            train_windows = _training_windows(windows, all_groups, np.unique(groups[train]))
        for name, factory in factories.items():
            if name in failed:
                continue
            try:
                features[name] = _features(factory(train_windows), windows, index)
            except WorkbenchError as exc:
                if on_error == "raise":
                    raise
                failed.add(name)
                notes.append(f"{name} left out: fold {f}: {exc}")
        for name in (n for n in names if n not in failed):
            x = features["mean-activation" if name == "permuted-labels" else name]
            train_y = rng.permutation(y[train]) if name == "permuted-labels" else y[train]
            predicted[name][test] = _predict(x[train], train_y, x[test], column.kind, seed)
            per_fold[name].append(decoding_scores(y[test], predicted[name][test], column.kind))
        held_out = sorted({group_names[g] for g in np.unique(groups[test])})
        fold_meta.append({"test": held_out, "n_train": int(len(train)), "n_test": int(len(test))})
    methods = {
        name: {m: {**summarise([s[m] for s in scores]), "folds": [s[m] for s in scores]} for m in METRICS[column.kind]}
        for name, scores in per_fold.items()
        if name not in failed
    }
    if predictions_out is not None:
        kept = {name: values for name, values in predicted.items() if name not in failed}
        predictions_out.update({"true": y, "fold": fold_of, "methods": kept})
    counts = np.bincount(y, minlength=len(column.categories)).tolist() if column.kind == "categorical" else None
    meta = {
        "task": "decoding",
        "label": label,
        "kind": column.kind,
        "categories": [c for c in column.categories if c not in exclude] if counts else None,
        "class_counts": {c: n for c, n in zip(column.categories, counts) if c not in exclude} if counts else None,
        "chance": 1.0 / (len(column.categories) - len(exclude)) if counts else 0.0,
        "window": window,
        "stride": stride,
        "rule": rule,
        "exclude": list(exclude),
        "normalization": normalization,
        "grouping": grouping,
        "n_folds": len(folds),
        "n_windows": int(len(index)),
        "n_groups": int(np.unique(groups).size),
        "folds": fold_meta,
        "seed": seed,
        "notes": notes,
    }
    return {"meta": meta, "methods": methods}


def _training_windows(windows: WindowSet, groups: np.ndarray, train_groups: np.ndarray) -> WindowSet:
    """Every window (labelled or not, without labels) of the runs whose group is in ``train_groups``."""
    runs = np.unique(windows.rec_index[np.isin(groups, train_groups)])
    return WindowSet([windows.recordings[r] for r in runs], windows.length, windows.stride, label_names=())


def decoding_table(results: dict[str, Any]) -> str:
    """Markdown table: rows = methods, columns = the label kind's metrics, cells ``mean ± ci``."""
    meta = results["meta"]
    metrics = METRICS[meta["kind"]]
    chance = f", chance {meta['chance']:.2f}" if meta["kind"] == "categorical" else ""
    title = (
        f"decoding {meta['label']!r} ({meta['kind']}{chance}), W = {meta['window']}, "
        f"{meta['n_windows']} windows, {meta['n_folds']} folds by {meta['grouping']} (mean ± 95% CI over folds)"
    )
    lines = [title, "", "| method | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    for name, values in results["methods"].items():
        cells = [f"{values[m]['mean']:.2f} ± {values[m]['ci']:.2f}" for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


__all__ = [
    "BASELINE_NAMES",
    "GROUPINGS",
    "METRICS",
    "NORMALIZATIONS",
    "decode",
    "decoding_scores",
    "decoding_table",
    "fc_edges",
    "group_folds",
    "linear_predictions",
    "mean_activation",
]
