"""Closed-set and open-set subject identification, with baselines, tables and metrics.json.

Both protocols follow ``docs/evaluation.md``, with queries from the same run or another:

* **closed-set** (N = all subjects): within-run (the default), the encoder trains on
  windows of the first part of every run only; support = first part (stride ``W // 4``),
  query = second part (stride ``W``). Cross-run (``queries="cross-run"``, Finn et al.
  2015), support = each subject's first run, query = its other runs, and the encoder
  trains on the support runs only.
* **open-set** (N = the evaluated subjects): ``n_splits`` seeded random splits of
  the subjects into a training half and an evaluated half; the encoder trains on
  all windows of the training subjects and never sees an evaluated one. The
  ``n_episodes`` episodes are divided as evenly as possible over the splits
  (600 over 10 splits = 60 each) and pooled, so the CI is over all episodes.

Every result holds the baselines ``"fc-fingerprint"``, ``"lda-fc"`` and ``"chance"``
next to the given encoders. Every method sees the same episodes (same seed and
labels), so differences between rows are paired.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from workbench.data.recording import Recording
from workbench.data.windows import WindowSet
from workbench.errors import ConfigError
from workbench.evaluation.baselines import BASELINES, chance_summary
from workbench.evaluation.episodes import METRIC_NAMES, EpisodeResult, run_episodes
from workbench.evaluation.pools import (
    EncoderFactory,
    closed_training_windows,
    eligible_recordings,
    embed_windows,
    identification_pools,
    subjects_of,
    support_stride,
)
from workbench.files import write_json


def _methods(factories: dict[str, EncoderFactory] | None, metric: str, baselines: bool = True) -> dict[str, tuple]:
    factories = dict(factories or {})
    clash = sorted(set(factories) & (set(BASELINES) | {"chance"}))
    if clash:
        raise ConfigError(f"factory names {clash} are reserved for baselines; rename them")
    return {**(BASELINES if baselines else {}), **{name: (f, metric) for name, f in factories.items()}}


def _usable(k_shots: Sequence[int], n_query: int, support: WindowSet, query: WindowSet):
    """K values every class can supply, skipped ones with reasons, and the query count."""
    support_min = int(np.bincount(support.labels).min())
    query_min = int(np.bincount(query.labels).min())
    if any(int(k) < 1 for k in k_shots) or not k_shots:
        raise ConfigError(f"k_shots={tuple(k_shots)} must be a non-empty list of integers >= 1")
    usable = [int(k) for k in k_shots if int(k) <= support_min]
    skipped = {
        str(k): f"only {support_min} support windows in the smallest class" for k in k_shots if int(k) > support_min
    }
    if not usable:
        raise ConfigError(
            f"no k in k_shots={tuple(k_shots)} fits the smallest support pool "
            f"({support_min} windows); lower k_shots or shorten the window"
        )
    if skipped:
        warnings.warn(f"k_shots skipped: {skipped}", stacklevel=3)
    used_query = min(n_query, query_min)
    if used_query < n_query:
        warnings.warn(
            f"the smallest query pool has {query_min} windows; every episode uses "
            f"{used_query} queries per class instead of n_query={n_query}",
            stacklevel=3,
        )
    return usable, skipped, used_query


def _evaluate_split(methods, train, support, query, ks, n_way, n_query, n_episodes, seed, bar):
    """EpisodeResults ``{method: {k: result}}`` of one training set and one pair of pools."""
    out: dict[str, dict[int, EpisodeResult]] = {}
    for name, (factory, metric) in methods.items():
        bar.set_postfix_str(name)
        embed_fn = factory(train)
        support_emb = embed_windows(embed_fn, support)
        query_emb = embed_windows(embed_fn, query)
        out[name] = {
            k: run_episodes(
                support_emb,
                support.labels,
                query_emb,
                query.labels,
                n_way,
                k,
                n_query=n_query,
                n_episodes=n_episodes,
                seed=seed,
                metric=metric,
            )
            for k in ks
        }
        bar.update(1)
    return out


def _package(episodes, n_way, ks, meta, episodes_out) -> dict[str, Any]:
    methods = {name: {str(k): per_k[k].summary() for k in ks} for name, per_k in episodes.items()}
    methods["chance"] = {str(k): chance_summary(n_way) for k in ks}
    if episodes_out is not None:
        episodes_out.update(episodes)
    return {"meta": meta, "methods": methods}


def closed_set(
    recordings: Sequence[Recording],
    window: int,
    factories: dict[str, EncoderFactory] | None = None,
    k_shots: Sequence[int] = (1, 2, 4, 8, 16),
    n_episodes: int = 600,
    n_query: int = 5,
    seed: int = 0,
    split: float = 0.5,
    train_stride: int | None = None,
    metric: str = "cosine",
    progress: bool = False,
    episodes_out: dict | None = None,
    queries: str = "within-run",
    baselines: bool = True,
) -> dict[str, Any]:
    """Closed-set N-way identification over all subjects.

    Parameters
    ----------
    recordings : sequence of Recording
        ``(T, R)`` runs; every distinct subject is a class.
    window : int
        Window length ``W`` in frames.
    factories : dict of str to EncoderFactory, optional
        Encoders to evaluate (e.g. ``{"fewshot": ..., "untrained": ...}``); each is
        given the training windows: the first part of every run, stride
        ``train_stride`` (default ``max(1, W // 4)``).
    k_shots : sequence of int
        Support sizes; values above the smallest support pool are skipped with a
        warning and listed in ``meta["k_shots_skipped"]``.
    n_episodes, n_query, seed, split : see :func:`run_episodes` / :func:`identification_pools`.
    metric : str
        Similarity for the given encoders (baselines use their own): ``"cosine"`` by default,
        which the length of a prototype cannot bias (:mod:`workbench.evaluation.episodes`).
    progress : bool
        Show a progress bar over methods.
    episodes_out : dict, optional
        Filled with ``{method: {k: EpisodeResult}}`` for curves and ROC/DET plots.
    queries : {"within-run", "cross-run"}
        Queries from the second half of the support run, or from another run of the subject
        (:mod:`workbench.evaluation.pools`); cross-run leaves out subjects with a single run
        (a warning names them) and the encoders train on the support runs only.
    baselines : bool
        Evaluate FC fingerprinting and LDA on FC beside the encoders (``False``: the encoders and
        chance only, e.g. when a learning curve evaluates the same data at many budgets).

    Returns
    -------
    dict
        Plain JSON: ``{"meta": {...}, "methods": {method: {str(k): {metric: {"mean", "ci"}}}}}``.
    """
    methods = _methods(factories, metric, baselines)
    recordings = eligible_recordings(recordings, queries)
    subjects = subjects_of(recordings)
    support, query = identification_pools(recordings, window, split, queries)
    stride = support_stride(window) if train_stride is None else train_stride
    train = closed_training_windows(recordings, window, stride, split, queries)
    ks, skipped, used_query = _usable(k_shots, n_query, support, query)
    with tqdm(total=len(methods), desc="closed-set", disable=not progress) as bar:
        episodes = _evaluate_split(methods, train, support, query, ks, None, used_query, n_episodes, seed, bar)
    meta = {
        "protocol": "closed-set",
        "queries": queries,
        "window": window,
        "n_way": len(subjects),
        "n_query": used_query,
        "n_query_requested": n_query,
        "n_episodes": n_episodes,
        "seed": seed,
        "split": split,
        "train_stride": stride,
        "k_shots": ks,
        "k_shots_skipped": skipped,
        "subjects": subjects,
        "metrics": {name: m for name, (_, m) in methods.items()},
    }
    return _package(episodes, len(subjects), ks, meta, episodes_out)


def open_set(
    recordings: Sequence[Recording],
    window: int,
    factories: dict[str, EncoderFactory] | None = None,
    n_way: int | None = None,
    n_splits: int = 10,
    k_shots: Sequence[int] = (1, 2, 4, 8, 16),
    n_episodes: int = 600,
    n_query: int = 5,
    seed: int = 0,
    split: float = 0.5,
    train_stride: int | None = None,
    metric: str = "cosine",
    progress: bool = False,
    episodes_out: dict | None = None,
    queries: str = "within-run",
) -> dict[str, Any]:
    """Open-set identification of subjects the encoder never saw.

    Parameters
    ----------
    recordings, window, factories, k_shots, n_query, seed, split, metric, progress, episodes_out, queries
        As :func:`closed_set`; cross-run, only subjects with two runs or more take part (in
        training and evaluation), so the splits are the same whatever the encoder.
    n_way : int, optional
        Classes per episode among the evaluated subjects (default: all of them).
    n_splits : int
        Random subject splits: the evaluated half is ``C // 2`` subjects drawn by a
        Generator seeded with ``seed``; the others train. Each encoder is trained
        once per split on all windows of the training subjects (stride
        ``train_stride``, default ``max(1, W // 4)``).
    n_episodes : int
        Total episodes, divided as evenly as possible over the splits and pooled.

    Returns
    -------
    dict
        As :func:`closed_set`; ``meta["splits"]`` lists each split's training and
        evaluated subjects and its number of episodes.
    """
    methods = _methods(factories, metric)
    recordings = eligible_recordings(recordings, queries)
    subjects = subjects_of(recordings)
    n_eval = len(subjects) // 2
    if n_eval < 2:
        raise ConfigError(f"open-set needs at least 4 subjects, got {len(subjects)}")
    n_way = n_eval if n_way is None else int(n_way)
    if not 2 <= n_way <= n_eval:
        raise ConfigError(f"n_way={n_way} must be between 2 and the {n_eval} evaluated subjects")
    if not 1 <= n_splits <= n_episodes:
        raise ConfigError(f"n_splits={n_splits} must be between 1 and n_episodes={n_episodes}")
    # Pool sizes per subject do not depend on the split: check K and Q once.
    support_all, query_all = identification_pools(recordings, window, split, queries)
    ks, skipped, used_query = _usable(k_shots, n_query, support_all, query_all)
    stride = support_stride(window) if train_stride is None else train_stride
    rng = np.random.default_rng(seed)
    per_split = np.diff(np.round(np.linspace(0, n_episodes, n_splits + 1)).astype(int))
    split_meta, collected = [], []
    with tqdm(total=n_splits * len(methods), desc="open-set", disable=not progress) as bar:
        for index, count in enumerate(per_split):
            evaluated = sorted(rng.permutation(subjects)[:n_eval].tolist())
            trained = [s for s in subjects if s not in evaluated]
            train = WindowSet(
                [r for r in recordings if r.subject in trained],
                window,
                stride,
                part="all",
                split=split,
                subjects=trained,
            )
            support, query = identification_pools(
                [r for r in recordings if r.subject in evaluated], window, split, queries
            )
            split_seed = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
            collected.append(
                _evaluate_split(methods, train, support, query, ks, n_way, used_query, int(count), split_seed, bar)
            )
            split_meta.append({"train": trained, "evaluated": evaluated, "n_episodes": int(count), "seed": split_seed})
    episodes = {
        name: {k: EpisodeResult.concatenate([run[name][k] for run in collected]) for k in ks} for name in methods
    }
    meta = {
        "protocol": "open-set",
        "queries": queries,
        "window": window,
        "n_way": n_way,
        "n_query": used_query,
        "n_query_requested": n_query,
        "n_episodes": n_episodes,
        "seed": seed,
        "split": split,
        "train_stride": stride,
        "k_shots": ks,
        "k_shots_skipped": skipped,
        "subjects": subjects,
        "n_splits": n_splits,
        "splits": split_meta,
        "metrics": {name: m for name, (_, m) in methods.items()},
    }
    return _package(episodes, n_way, ks, meta, episodes_out)


def results_table(results: dict[str, Any], metric: str = "accuracy") -> str:
    """Markdown table of one metric: rows = methods, columns = K, cells ``mean ± ci``.

    Parameters
    ----------
    results : dict
        Output of :func:`closed_set` or :func:`open_set`.
    metric : {"accuracy", "macro_f1", "roc_auc", "eer"}
        The metric shown.
    """
    if metric not in METRIC_NAMES:
        raise ConfigError(f"metric={metric!r} is unknown; use one of {', '.join(METRIC_NAMES)}")
    meta = results["meta"]
    ks = [str(k) for k in meta["k_shots"]]
    title = (
        f"{meta['protocol']} {meta['n_way']}-way, {meta.get('queries', 'within-run')} queries, "
        f"W = {meta['window']}, {metric} "
        f"(mean ± 95% CI over {meta['n_episodes']} episodes, {meta['n_query']} queries/class)"
    )
    lines = [title, "", "| method | " + " | ".join(f"K = {k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for name, per_k in results["methods"].items():
        cells = [f"{per_k[k][metric]['mean']:.2f} ± {per_k[k][metric]['ci']:.2f}" for k in ks]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_metrics(results: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``results`` as JSON atomically (see :mod:`workbench.files`).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    return write_json(path, results, indent=2, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
