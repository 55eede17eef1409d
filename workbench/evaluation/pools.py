"""Support / query / training window pools and batched embedding of a WindowSet.

The identification protocol (``docs/evaluation.md``)
splits every run in time: support windows come from the first part with stride
``max(1, W // 4)``, query windows from the second part with stride ``W``, so no
query frame was ever seen in a support window (checked by ``assert_disjoint``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from workbench.data.cache import release_pages
from workbench.data.recording import Recording
from workbench.data.windows import WindowSet, assert_disjoint
from workbench.errors import ConfigError, DataError
from workbench.files import atomic_path

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


def identification_pools(
    recordings: Sequence[Recording], window: int, split: float = 0.5
) -> tuple[WindowSet, WindowSet]:
    """Support and query pools of the subject-identification protocol.

    Parameters
    ----------
    recordings : sequence of Recording
        ``(T, R)`` ROI runs; the subjects (sorted) are the classes of both pools.
    window : int
        Window length ``W`` in frames.
    split : float
        Fraction of each run that forms the first (support) part.

    Returns
    -------
    support, query : WindowSet
        ``support``: first part, stride ``max(1, W // 4)``; ``query``: second part,
        stride ``W``. Both share the subject list, so labels agree.

    Raises
    ------
    DataError
        If any support window overlaps a query window, or a subject has no window
        in either pool (run too short for ``W``).
    """
    if window < 2:
        raise ConfigError(f"window={window} must be at least 2 frames")
    subjects = subjects_of(recordings)
    support = WindowSet(
        list(recordings),
        window,
        support_stride(window),
        part="first",
        split=split,
        subjects=subjects,
    )
    query = WindowSet(list(recordings), window, window, part="second", split=split, subjects=subjects)
    assert_disjoint(support, query)
    for name, pool in (("support", support), ("query", query)):
        counts = np.bincount(np.asarray(pool.labels), minlength=len(subjects))
        if counts.min() == 0:
            empty = [s for s, c in zip(subjects, counts) if c == 0]
            raise DataError(
                f"subjects {empty} have no {name} window of {window} frames (split={split}); use a shorter window"
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
