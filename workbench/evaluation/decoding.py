"""Task decoding: a label of each window read from frozen features, group-wise cross-validated.

The second headline task (``docs/evaluation.md``). Every window of ``W`` frames that carries the
label (a categorical label by the ``"pure"`` or ``"majority"`` rule of
:mod:`workbench.data.labels`, a continuous one as the mean over its frames) is one sample; the
samples are split into folds by **group**, so no subject (``grouping="subject"``, scikit-learn
``GroupKFold``) or no run (``grouping="run"``, ``LeaveOneGroupOut`` by default) is ever on both
sides of a split. Within each fold:

* every encoder factory is called with the fold's **pre-training** windows, without labels (the
  training fold's runs; a transfer source; or, asked for by name, the test runs too: see
  :mod:`workbench.evaluation.label_efficiency`), and returns a function from windows to features;
* a linear probe is fitted on the labelled windows of ``n`` training groups (``sizes``; ``"all"``
  for every labelled training window): ``StandardScaler`` then ``LogisticRegressionCV`` /
  ``RidgeCV`` whose penalty an inner group-wise cross-validation chooses
  (:mod:`workbench.evaluation.linear`); token features ``(n, tokens, dim)`` get the attentive probe
  of :mod:`workbench.evaluation.attentive`; fine-tuned rows train the encoder itself
  (:mod:`workbench.evaluation.finetune`);
* the test fold is scored: balanced accuracy and macro-F1 (categorical), R² and Spearman ρ
  (continuous).

Each metric is reported as mean ± 1.96·std/√F over the F folds (each fold's mean over its random
draws of ``n`` groups; :func:`~workbench.evaluation.metrics.summarise`). Baselines beside every
encoder (as in fMRI foundation-model benchmarks, which always include a connectome baseline):
``mean-activation`` (each region's mean over the window, the first-order signal task decoding
reads), ``fc-edges`` (Pearson correlations of the window, Fisher-z, upper triangle; skipped with a
note when it would exceed ``max_fc_edges`` features), ``raw-window`` (every frame of the window,
flattened) and ``permuted-labels`` (the mean-activation probe fitted on training labels shuffled
within the fold: chance, measured).

Windows per label. An event label is read from short windows inside the event, moved later by
``label_shift`` frames for the haemodynamic delay (:func:`delay_labels`); a state that holds for
a whole run (a regulation instruction, a group) from long windows.

Normalisation. With ``normalization="run"`` (the default) each run is z-scored on its own frames
before windows are cut (:func:`~workbench.data.normalize.standardize_runs`): nothing crosses runs
or subjects, within-run activation survives, run offsets go. A family still applies its own
scaling (its ``Standardizer``) inside its embedding function. ``"none"`` gives the recordings
as they are.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import balanced_accuracy_score, f1_score, r2_score
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut
from tqdm.auto import tqdm

from workbench.connectivity import correlation, fisher_z, upper_triangle
from workbench.data.normalize import standardize_runs
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError, DataError, WorkbenchError
from workbench.evaluation.attentive import attentive_probe
from workbench.evaluation.label_efficiency import (
    check_no_leak,
    check_pretraining,
    check_sizes,
    draw_groups,
    usable_sizes,
)
from workbench.evaluation.linear import linear_predictions
from workbench.evaluation.metrics import summarise
from workbench.evaluation.pools import EncoderFactory

GROUPINGS = ("subject", "run")
NORMALIZATIONS = ("run", "none")
BASELINE_NAMES = ("mean-activation", "fc-edges", "raw-window", "permuted-labels")
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


def _predict(train_x, train_y, test_x, kind: str, seed: int, groups=None, runs=None) -> np.ndarray:
    if train_x.ndim == 3:
        return attentive_probe(train_x, train_y, test_x, kind, seed=seed)
    return linear_predictions(train_x, train_y, test_x, kind, seed, groups=groups, runs=runs)


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


def raw_window(windows: np.ndarray) -> np.ndarray:
    """The window itself, flattened: ``(n, W, R)`` → ``(n, W·R)`` float32 (a linear probe on every frame)."""
    windows = np.asarray(windows, dtype=np.float32)
    return windows.reshape(len(windows), -1)


BASELINES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "mean-activation": mean_activation,
    "fc-edges": fc_edges,
    "raw-window": raw_window,
}
"""Feature baselines of every decoding table (``permuted-labels`` reuses ``mean-activation``)."""

FoldTuner = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str, int], np.ndarray]
"""``tuner(train_windows, train_y, train_groups, test_windows, kind, seed) -> predictions`` of one fold."""
Finetuner = Callable[[WindowSet], FoldTuner]
"""Called once per fold with the pre-training windows (no labels); returns that fold's tuner."""


def delay_labels(recordings: Sequence[Recording], frames: int) -> list[Recording]:
    """Recordings whose frame labels are moved ``frames`` frames later, for the haemodynamic delay.

    Frame ``t`` takes the label of frame ``t - frames`` (the first ``frames`` frames get none), so
    a window's label is what the subject was doing about ``frames · TR`` seconds before the window:
    the BOLD response peaks 4–6 s after an event. ``frames=0`` returns the recordings unchanged.
    """
    if isinstance(frames, bool) or not isinstance(frames, (int, np.integer)) or frames < 0:
        raise ConfigError(f"label_shift={frames!r}: give a whole number of frames >= 0 (e.g. 2 for 4-5 s)")
    if frames == 0:
        return list(recordings)
    return [
        dataclasses.replace(r, frame_labels=None if r.frame_labels is None else r.frame_labels.shift(frames))
        for r in recordings
    ]


def _check_names(factories: dict[str, Any], finetuners: dict[str, Any], baselines: Sequence[str]) -> None:
    unknown = sorted(set(baselines) - set(BASELINE_NAMES))
    if unknown:
        raise ConfigError(f"baselines: {unknown} are unknown; choose from {list(BASELINE_NAMES)}")
    clash = sorted((set(factories) | set(finetuners)) & set(BASELINE_NAMES))
    if clash:
        raise ConfigError(f"factory names {clash} are reserved for the decoding baselines; rename them")
    both = sorted(set(factories) & set(finetuners))
    if both:
        raise ConfigError(f"{both} name both a frozen readout and a fine-tuned one; give them different names")


def _pretraining_source(
    recordings: list[Recording], source: Sequence[Recording] | None, normalization: str
) -> list[Recording]:
    """The runs pre-training draws from: the decoded dataset, or a transfer source of the same atlas."""
    if source is None:
        return recordings
    source = list(source)
    if not source or any(r.data.ndim != 2 for r in source):
        raise ConfigError("pretrain_recordings: give ROI series (T, R) of the same atlas as the decoded dataset")
    if source[0].n_rois != recordings[0].n_rois:
        raise ConfigError(
            f"pretrain_recordings have {source[0].n_rois} regions but the decoded dataset {recordings[0].n_rois}; "
            "transfer needs the same atlas"
        )
    names, theirs = recordings[0].meta.get("roi_names"), source[0].meta.get("roi_names")
    if names is not None and theirs is not None and list(names) != list(theirs):
        raise ConfigError("pretrain_recordings name their regions differently from the decoded dataset; use one atlas")
    return standardize_runs(source) if normalization == "run" else source


def _group_key(recording: Recording, grouping: str) -> str:
    return recording.subject if grouping == "subject" else f"{recording.subject}/{recording.session}"


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
    label_shift: int = 0,
    baselines: Sequence[str] = BASELINE_NAMES,
    sizes: Sequence[int | str] = ("all",),
    n_draws: int = 5,
    finetuners: dict[str, Finetuner] | None = None,
    finetune_draws: int | None = None,
    pretraining: str = "inductive",
    pretrain_recordings: Sequence[Recording] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Decode a frame label from windows with every encoder and the baselines, as labels grow.

    Parameters
    ----------
    recordings : sequence of Recording
        ``(T, F)`` runs with ``frame_labels``.
    label : str
        A frame-label column; an unknown name is a DataError listing the available ones.
    window : int
        Window length ``W`` in frames.
    factories : dict of str to EncoderFactory, optional
        Frozen encoders; each is called once per fold with the fold's pre-training windows (no
        labels attached, every window, stride ``stride``), and returns ``(n, W, F) → (n, D)``
        features for the linear probe or ``(n, N, D)`` token features for the attentive probe.
    stride : int, optional
        Step between windows (default ``max(1, W // 2)``).
    grouping : {"subject", "run"}
        What a fold holds out, and what the label-efficiency draws count.
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
        Seeds the probes, the label permutation and the draws.
    on_error : {"raise", "note"}
        What a WorkbenchError of an encoder does (e.g. a family that needs several subjects on a
        one-subject dataset): stop, or leave that encoder out with a note in ``meta["notes"]``.
    predictions_out : dict, optional
        Filled with ``{"true": (n,), "fold": (n,), "methods": {name: (n,) out-of-fold predictions}}``
        (probes on all labels) for confusion matrices and scatter plots.
    label_shift : int
        Frames by which labels are moved later for the haemodynamic delay (:func:`delay_labels`).
    baselines : sequence of str
        Which of :data:`BASELINE_NAMES` to run.
    sizes : sequence of int or "all"
        Labelled training groups of the probes (:mod:`workbench.evaluation.label_efficiency`);
        ``"all"`` (every labelled training window) is always included and gives ``methods``.
    n_draws : int
        Random draws of groups per size below ``"all"``.
    finetuners : dict of str to Finetuner, optional
        Encoders fine-tuned end to end per fold and draw (:mod:`workbench.evaluation.finetune`).
    finetune_draws : int, optional
        Draws per size for the fine-tuned rows (default ``n_draws``; fine-tuning costs more).
    pretraining : {"inductive", "transductive"}
        Whether the encoders may also be fitted on the test groups' unlabelled windows
        (:func:`~workbench.evaluation.label_efficiency.check_no_leak`).
    pretrain_recordings : sequence of Recording, optional
        Transfer: fit the encoders on these runs (another dataset of the same atlas) instead of
        the decoded dataset's training runs; runs of a test subject are left out unless
        transductive.
    progress : bool
        A progress bar over the folds.

    Returns
    -------
    dict
        Plain JSON: ``{"meta": {...}, "methods": {name: {metric: {"mean", "ci", "folds"}}},
        "curves": {name: {n: {metric: {"mean", "ci", "folds"}, "draws": k}}}}``; ``methods`` is
        the ``"all"`` column of ``curves``.
    """
    factories, finetuners = dict(factories or {}), dict(finetuners or {})
    _check_names(factories, finetuners, baselines)
    if grouping not in GROUPINGS:
        raise ConfigError(f"grouping={grouping!r}: choose one of {list(GROUPINGS)}")
    if on_error not in ("raise", "note"):
        raise ConfigError(f"on_error={on_error!r}: choose 'raise' or 'note'")
    if normalization not in NORMALIZATIONS:
        raise ConfigError(f"normalization={normalization!r}: choose one of {list(NORMALIZATIONS)}")
    check_pretraining(pretraining)
    sizes = check_sizes(sizes)
    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise ConfigError(f"n_draws={n_draws!r}: give a whole number of draws >= 1")
    finetune_draws = n_draws if finetune_draws is None else finetune_draws
    if isinstance(finetune_draws, bool) or not isinstance(finetune_draws, (int, np.integer)) or finetune_draws < 1:
        raise ConfigError(f"finetune_draws={finetune_draws!r}: give a whole number of draws >= 1")
    stride = max(1, window // 2) if stride is None else stride
    recordings = standardize_runs(recordings) if normalization == "run" else list(recordings)
    source = _pretraining_source(recordings, pretrain_recordings, normalization)
    windows = WindowSet(delay_labels(recordings, label_shift), window, stride, label_names=[label], label_rule=rule)
    column = windows.label_columns[0]
    index, y = _labelled(windows, exclude)
    all_groups, group_names = _groups(windows, grouping)
    groups = all_groups[index]
    runs = windows.rec_index[index]
    folds = group_folds(groups, grouping, n_folds)
    n_train = [np.unique(groups[train]).size for train, _ in folds]
    sizes, notes = usable_sizes(sizes, n_train)

    chosen = {name: fn for name, fn in BASELINES.items() if name in baselines}
    n_edges = windows.n_rois * (windows.n_rois - 1) // 2
    if "fc-edges" in chosen and n_edges > max_fc_edges:
        del chosen["fc-edges"]
        notes.append(f"fc-edges skipped: {n_edges} edges of {windows.n_rois} features exceed max_fc_edges")
    if "permuted-labels" in baselines:
        chosen.setdefault("mean-activation", mean_activation)
    fixed = {name: _features(fn, windows, index) for name, fn in chosen.items()}
    permuted = ["permuted-labels"] if "permuted-labels" in baselines else []

    frozen = [n for n in BASELINE_NAMES if n in chosen and n in baselines] + permuted + list(factories)
    names = frozen + list(finetuners)
    scores: dict[str, dict[Any, list[list[dict[str, float]]]]] = {name: {n: [] for n in sizes} for name in names}
    predicted = {name: np.empty(len(index), dtype=np.float64) for name in names}
    fold_meta, failed = [], set()
    fold_of = np.empty(len(index), dtype=np.int64)
    keys = np.array(group_names)
    for f, (train, test) in enumerate(tqdm(folds, desc=f"decoding {label}", disable=not progress, unit="fold")):
        fold_of[test] = f
        if column.kind == "categorical" and np.unique(y[train]).size < 2:
            raise DataError(f"fold {f}: its training windows hold one {label!r} class; use fewer folds")
        test_keys = sorted(set(keys[np.unique(groups[test])]))
        train_keys = sorted(set(keys[np.unique(groups[train])]))
        pool = [r for r in source if pretraining == "transductive" or _group_key(r, grouping) not in test_keys]
        pool_keys = sorted({_group_key(r, grouping) for r in pool})
        check_no_leak(pool_keys, train_keys, test_keys, pretraining)
        features = dict(fixed)
        tuners: dict[str, FoldTuner] = {}
        if factories or finetuners:
            pool_windows = WindowSet(pool, window, stride, label_names=())
        for name, builder in [*factories.items(), *finetuners.items()]:
            if name in failed:
                continue
            try:
                if name in factories:
                    features[name] = _features(builder(pool_windows), windows, index)
                else:
                    tuners[name] = builder(pool_windows)
            except WorkbenchError as exc:
                if on_error == "raise":
                    raise
                failed.add(name)
                notes.append(f"{name} left out: fold {f}: {exc}")
        draws_meta = {}
        for n in sizes:
            if n == "all":
                draws = [train_keys]
            else:
                draws = draw_groups(train_keys, n, n_draws, seed, f, _class_check(column.kind, y, keys[groups], train))
                draws_meta[str(n)] = draws
            for d, drawn in enumerate(draws):
                rows = train[np.isin(keys[groups[train]], drawn)]
                rng = np.random.default_rng([seed, f, 0 if n == "all" else n, d])
                fits = {name: scores[name][n] for name in names if name not in failed}
                for name in fits:
                    if name in tuners and d >= finetune_draws:
                        continue
                    train_y = rng.permutation(y[rows]) if name == "permuted-labels" else y[rows]
                    if name in tuners:
                        # early stopping holds out whole subjects, or the runs of a single subject
                        inner = groups[rows] if np.unique(groups[rows]).size >= 2 else runs[rows]
                        out = tuners[name](
                            windows.get(index[rows]), train_y, inner, windows.get(index[test]), column.kind, seed
                        )
                    else:
                        x = features["mean-activation" if name == "permuted-labels" else name]
                        out = _predict(x[rows], train_y, x[test], column.kind, seed, groups[rows], runs[rows])
                    if d == 0:
                        fits[name].append([])
                    fits[name][-1].append(decoding_scores(y[test], out, column.kind))
                    if n == "all":
                        predicted[name][test] = out
        fold_meta.append(
            {
                "test": test_keys,
                "n_train": int(len(train)),
                "n_test": int(len(test)),
                "pretraining_groups": len(pool_keys),
                "draws": draws_meta,
            }
        )
    curves = {
        name: {str(n): _summary(per_fold, column.kind) for n, per_fold in by_size.items()}
        for name, by_size in scores.items()
        if name not in failed
    }
    methods = {name: {m: v for m, v in curve["all"].items() if m != "draws"} for name, curve in curves.items()}
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
        "label_shift": label_shift,
        "rule": rule,
        "exclude": list(exclude),
        "normalization": normalization,
        "grouping": grouping,
        "n_folds": len(folds),
        "n_windows": int(len(index)),
        "n_groups": int(np.unique(groups).size),
        "sizes": [str(n) for n in sizes],
        "n_draws": n_draws,
        "finetune_draws": finetune_draws,
        "finetuned": [name for name in finetuners if name not in failed],
        "pretraining": pretraining,
        "transfer": pretrain_recordings is not None,
        "folds": fold_meta,
        "seed": seed,
        "notes": notes,
    }
    return {"meta": meta, "methods": methods, "curves": curves}


def _class_check(kind: str, y: np.ndarray, row_keys: np.ndarray, train: np.ndarray) -> Callable | None:
    """For categorical labels: does a draw of groups hold two classes among its labelled windows?"""
    if kind != "categorical":
        return None
    train_keys, train_y = row_keys[train], y[train]
    return lambda drawn: np.unique(train_y[np.isin(train_keys, drawn)]).size >= 2


def _summary(per_fold: list[list[dict[str, float]]], kind: str) -> dict[str, Any]:
    """Each fold's mean over its draws, then mean ± 95 % CI over the folds."""
    out: dict[str, Any] = {}
    for m in METRICS[kind]:
        fold_means = [float(np.nanmean([s[m] for s in draws])) for draws in per_fold]
        out[m] = {**summarise(fold_means), "folds": fold_means}
    out["draws"] = max((len(d) for d in per_fold), default=0)
    return out


def _shift(meta: dict[str, Any]) -> str:
    shift = meta.get("label_shift", 0)
    return f", labels {shift} frames later" if shift else ""


def pretraining_note(meta: dict[str, Any]) -> str:
    """What the encoders were pre-trained on, when it is not the training fold: transfer, transductive."""
    parts = []
    if meta.get("transfer"):
        parts.append(f"pre-trained on {meta.get('pretrained_on') or 'another dataset'} (transfer)")
    if meta.get("pretraining") == "transductive":
        parts.append("TRANSDUCTIVE: pre-training also saw the test groups' unlabelled windows")
    return "; " + "; ".join(parts) if parts else ""


def decoding_table(results: dict[str, Any]) -> str:
    """Markdown table: rows = methods, columns = the label kind's metrics, cells ``mean ± ci``."""
    meta = results["meta"]
    metrics = METRICS[meta["kind"]]
    chance = f", chance {meta['chance']:.2f}" if meta["kind"] == "categorical" else ""
    title = (
        f"decoding {meta['label']!r} ({meta['kind']}{chance}), W = {meta['window']}{_shift(meta)}, "
        f"{meta['n_windows']} windows, {meta['n_folds']} folds by {meta['grouping']} (mean ± 95% CI over folds)"
        f"{pretraining_note(meta)}"
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
    "delay_labels",
    "pretraining_note",
    "raw_window",
    "fc_edges",
    "group_folds",
    "linear_predictions",
    "mean_activation",
]
