"""Support / query / training window pools and batched embedding of a WindowSet.

The identification protocol (``docs/evaluation.md``) pairs support and query windows in
one of two ways (``queries``):

``"within-run"``  every run is split in time: support windows come from the first part
                  with stride ``max(1, W // 4)``, query windows from the second part with
                  stride ``W``; encoders train on the first parts.
``"cross-run"``   support windows come from one run of a subject (its first, stride
                  ``W // 4``) and query windows from its other runs (stride ``W``), the
                  protocol of Finn et al. 2015 ("Functional connectome fingerprinting",
                  Nat. Neurosci. 18:1664); encoders train on the support runs. Subjects
                  with a single run cannot take part and are left out with a warning.

Either way no query frame was ever seen in a support window (checked by ``assert_disjoint``).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from workbench.data.cache import release_pages
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet, assert_disjoint
from workbench.errors import ConfigError, DataError
from workbench.files import atomic_path

QUERIES = ("within-run", "cross-run")
"""Where query windows come from: the second half of the support run, or another run."""

EmbedFn = Callable[[np.ndarray], np.ndarray]
"""Maps raw windows ``(n, W, R)`` float32 to embeddings ``(n, D)``."""

EncoderFactory = Callable[[WindowSet], EmbedFn]
"""Given the training windows, trains (or not) and returns an :data:`EmbedFn`."""


def subjects_of(recordings: Sequence[Recording]) -> list[str]:
    """Sorted distinct subjects of ``recordings``: the class order of every pool."""
    return sorted({r.subject for r in recordings})


def support_stride(window: int) -> int:
    """Stride of the support pool: ``max(1, W // 4)`` frames."""
    return max(1, window // 4)


def check_queries(queries: str) -> str:
    """``queries`` if it is one of :data:`QUERIES`, else a ConfigError naming the valid values."""
    if queries not in QUERIES:
        raise ConfigError(f"queries={queries!r} is unknown; use one of {', '.join(QUERIES)}")
    return queries


def split_runs(recordings: Sequence[Recording]) -> tuple[list[Recording], list[Recording]]:
    """Support runs and query runs of the cross-run protocol.

    The first run of every subject (in the given order; :func:`~workbench.data.catalog.load_recordings`
    sorts sessions naturally) is its support run, its other runs are query runs. Subjects with a
    single run are left out with a warning that names them.

    Raises
    ------
    DataError
        Fewer than two subjects have two runs or more.
    """
    runs: dict[str, list[Recording]] = {}
    for rec in recordings:
        runs.setdefault(rec.subject, []).append(rec)
    single = sorted(subject for subject, own in runs.items() if len(own) < 2)
    kept = [subject for subject, own in runs.items() if len(own) >= 2]
    if len(kept) < 2:
        raise DataError(
            f"cross-run identification needs at least two subjects with two runs or more; "
            f"{len(kept)} of the {len(runs)} subjects have them. Use queries='within-run', or a dataset "
            "with several runs per subject (e.g. heatpain)"
        )
    if single:
        warnings.warn(
            f"cross-run identification leaves out {len(single)} subject(s) with a single run: {single[:10]}",
            stacklevel=3,
        )
    support = [runs[subject][0] for subject in kept]
    query = [rec for subject in kept for rec in runs[subject][1:]]
    return support, query


def eligible_recordings(recordings: Sequence[Recording], queries: str = "within-run") -> list[Recording]:
    """The runs that take part: all of them within-run; cross-run, those of subjects with two runs or more."""
    if check_queries(queries) == "within-run":
        return list(recordings)
    support, query = split_runs(recordings)
    return [rec for rec in recordings if any(rec is r for r in (*support, *query))]


def closed_training_windows(
    recordings: Sequence[Recording], window: int, stride: int, split: float = 0.5, queries: str = "within-run"
) -> WindowSet:
    """What encoders train on in closed-set identification: the support part of every subject.

    Within-run: the first part of every run; cross-run: every window of the support runs
    (:func:`split_runs`), so no frame of a query run is ever seen. Stride ``stride``.
    """
    subjects = subjects_of(recordings)
    if check_queries(queries) == "within-run":
        return WindowSet(list(recordings), window, stride, part="first", split=split, subjects=subjects)
    support_runs, _ = split_runs(recordings)
    return WindowSet(support_runs, window, stride, part="all", subjects=subjects)


def identification_pools(
    recordings: Sequence[Recording], window: int, split: float = 0.5, queries: str = "within-run"
) -> tuple[WindowSet, WindowSet]:
    """Support and query pools of the subject-identification protocol.

    Parameters
    ----------
    recordings : sequence of Recording
        ``(T, R)`` ROI runs; the subjects (sorted) are the classes of both pools.
    window : int
        Window length ``W`` in frames.
    split : float
        Fraction of each run that forms the first (support) part (within-run only).
    queries : {"within-run", "cross-run"}
        Where query windows come from (module docstring). Cross-run, give only the runs of
        subjects with two runs or more (:func:`eligible_recordings`).

    Returns
    -------
    support, query : WindowSet
        ``support``: stride ``max(1, W // 4)``, the first part of each run (within-run) or each
        subject's first run (cross-run); ``query``: stride ``W``, the second part of each run or
        the subject's other runs. Both share the subject list, so labels agree.

    Raises
    ------
    DataError
        If any support window overlaps a query window, or a subject has no window
        in either pool (run too short for ``W``), or (cross-run) a subject has a single run.
    """
    if window < 2:
        raise ConfigError(f"window={window} must be at least 2 frames")
    subjects = subjects_of(recordings)
    if check_queries(queries) == "within-run":
        support = WindowSet(
            list(recordings), window, support_stride(window), part="first", split=split, subjects=subjects
        )
        query = WindowSet(list(recordings), window, window, part="second", split=split, subjects=subjects)
    else:
        support_runs, query_runs = split_runs(recordings)
        if len(support_runs) < len(subjects):
            single = sorted(set(subjects) - {r.subject for r in support_runs})
            raise DataError(
                f"subjects {single[:10]} have a single run; cross-run pools need two runs per subject "
                "(pass eligible_recordings(recordings, 'cross-run'))"
            )
        support = WindowSet(support_runs, window, support_stride(window), part="all", subjects=subjects)
        query = WindowSet(query_runs, window, window, part="all", subjects=subjects)
    assert_disjoint(support, query)
    for name, pool in (("support", support), ("query", query)):
        counts = np.bincount(np.asarray(pool.labels), minlength=len(subjects))
        if counts.min() == 0:
            empty = [s for s, c in zip(subjects, counts) if c == 0]
            where = f"split={split}" if queries == "within-run" else "cross-run"
            raise DataError(
                f"subjects {empty} have no {name} window of {window} frames ({where}); use a shorter window"
            )
    return support, query


def _checked(embedding: np.ndarray, n: int) -> np.ndarray:
    embedding = np.asarray(embedding, dtype=np.float32)
    if embedding.ndim != 2 or embedding.shape[0] != n:
        raise DataError(
            f"the embedding function returned shape {embedding.shape} for {n} windows; it must map (n, W, R) to (n, D)"
        )
    return embedding


def embed_windows(
    embed_fn: EmbedFn,
    windows: WindowSet,
    batch_size: int = 512,
    progress: bool = False,
    out: str | os.PathLike | np.ndarray | None = None,
) -> np.ndarray:
    """Embed every window of a WindowSet, streaming in batches.

    Parameters
    ----------
    embed_fn : callable
        ``(b, W, R) float32 -> (b, D)``.
    windows : WindowSet
        Windows to embed, in order.
    batch_size : int
        Windows materialised at a time.
    progress : bool
        Show a ``tqdm`` progress bar.
    out : path or numpy.ndarray, optional
        Where the embeddings go, batch by batch, so that neither the windows nor the
        embeddings of a large cohort are ever held in memory together. A path (``.npy``) is
        written as a memory map in a temporary file beside it that replaces the target only
        once every batch is in (:func:`workbench.files.atomic_path`): after an error no
        half-written file remains. An array (e.g. ``np.lib.format.open_memmap``) of shape
        ``(len(windows), D)`` is filled in place. Default: a new in-memory array.

    Returns
    -------
    numpy.ndarray
        ``(len(windows), D)`` float32 embeddings; for a path, ``np.load(path, mmap_mode="r")``.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    if len(windows) == 0:
        raise DataError("embed_windows got an empty WindowSet")
    batches = [np.arange(s, min(s + batch_size, len(windows))) for s in range(0, len(windows), batch_size)]
    batches = tqdm(batches, desc="embed", disable=not progress)
    if out is None:
        parts = [_checked(embed_fn(windows.get(index)), len(index)) for index in batches]
        return _checked(np.concatenate(parts, axis=0), len(windows))
    if isinstance(out, np.ndarray):
        for index in batches:
            part = _checked(embed_fn(windows.get(index)), len(index))
            if out.shape != (len(windows), part.shape[1]):
                raise ConfigError(
                    f"out has shape {out.shape} but the embeddings are {(len(windows), part.shape[1])}; "
                    "give an array of that shape, or a path"
                )
            out[index] = part
        return out
    path = Path(out)
    with atomic_path(path) as tmp:
        target = None
        for index in batches:
            part = _checked(embed_fn(windows.get(index)), len(index))
            if target is None:
                target = np.lib.format.open_memmap(
                    tmp, mode="w+", dtype=np.float32, shape=(len(windows), part.shape[1])
                )
            elif part.shape[1] != target.shape[1]:
                raise DataError(
                    f"the embedding function returned {part.shape[1]} features for windows {index[0]}.., "
                    f"{target.shape[1]} before; it must give one dimension D"
                )
            target[index] = part
            target.flush()
            release_pages(target)
        del target
    return np.load(path, mmap_mode="r")
