"""Support / query / training window pools and batched embedding of a WindowSet.

The identification protocol (``docs/evaluation.md``)
splits every run in time: support windows come from the first part with stride
``max(1, W // 4)``, query windows from the second part with stride ``W``, so no
query frame was ever seen in a support window (checked by ``assert_disjoint``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

from workbench.data.recording import Recording
from workbench.data.windows import WindowSet, assert_disjoint
from workbench.errors import ConfigError, DataError

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


def embed_windows(embed_fn: EmbedFn, windows: WindowSet, batch_size: int = 512, progress: bool = False) -> np.ndarray:
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

    Returns
    -------
    numpy.ndarray
        ``(len(windows), D)`` float32 embeddings.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size={batch_size} must be >= 1")
    starts = range(0, len(windows), batch_size)
    parts = []
    for start in tqdm(starts, desc="embed", disable=not progress):
        index = np.arange(start, min(start + batch_size, len(windows)))
        parts.append(np.asarray(embed_fn(windows.get(index)), dtype=np.float32))
    if not parts:
        raise DataError("embed_windows got an empty WindowSet")
    embeddings = np.concatenate(parts, axis=0)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(windows):
        raise DataError(
            f"the embedding function returned shape {embeddings.shape} for {len(windows)} "
            "windows; it must map (n, W, R) to (n, D)"
        )
    return embeddings
